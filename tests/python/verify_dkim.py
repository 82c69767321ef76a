#!/usr/bin/env python3
"""Verify every DKIM-Signature of a message with dkimpy, an implementation independent of
the mail-auth crate sendwerk signs with.

    verify_dkim.py MESSAGE_FILE --txt sel._domainkey.example.com='v=DKIM1; k=ed25519; p=...'

DNS is never queried: keys come only from --txt options. Prints one line per signature
(`ok d=... s=... a=...` or `fail d=... s=... a=...: reason`) and exits 0 only if there is
at least one signature and every one verifies; 1 if any fails; 2 on usage errors.
"""

import argparse
import sys

import dkim


def parse_txt_options(options):
    records = {}
    for option in options:
        name, separator, value = option.partition("=")
        if not separator or not name.strip():
            raise SystemExit(f"--txt expects NAME=VALUE, got {option!r}")
        records[name.strip().rstrip(".").lower()] = value.strip().encode("ascii")
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", help="file with the raw message (CRLF or LF line endings)")
    parser.add_argument(
        "--txt",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a DNS TXT record, e.g. sel._domainkey.example.com='v=DKIM1; k=rsa; p=...'",
    )
    args = parser.parse_args()
    records = parse_txt_options(args.txt)

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        return records.get(name.rstrip(".").lower())

    with open(args.message, "rb") as message_file:
        message = message_file.read()

    verifier = dkim.DKIM(message)
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    if not signatures:
        print("fail: the message has no DKIM-Signature header")
        return 1

    num_failed = 0
    for index, raw_signature in enumerate(signatures):
        tags = {}
        try:
            tags = dkim.util.parse_tag_value(raw_signature)
        except Exception:  # the verifier below reports the malformed signature itself
            pass
        label = "d={} s={} a={}".format(
            *(tags.get(tag, b"?").decode("ascii", "replace") for tag in (b"d", b"s", b"a"))
        )
        try:
            verified = dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc)
            reason = "the signature does not match the signed header fields"
        except dkim.DKIMException as error:
            verified = False
            reason = str(error)
        if verified:
            print(f"ok {label}")
        else:
            num_failed += 1
            print(f"fail {label}: {reason}")
    return 0 if num_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
