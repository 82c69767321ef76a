#!/usr/bin/env python3
"""A sendwerk client in another language, generated from proto/ with grpcio-tools.

    grpc_client.py TARGET NUM_RECIPIENTS      (TARGET like 127.0.0.1:50051)

Creates a mailing, streams recipients with merge variables, schedules it and watches it
until it completes. Prints one JSON line with the final counts; exits 0 when every recipient
was sent.
"""

import json
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def generate_stubs(out_dir):
    proto_dir = os.path.join(ROOT, "proto")
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for name in ("admin.proto", "bounce.proto", "mailing.proto", "suppression.proto"):
        status = protoc.main(
            [
                "protoc",
                f"-I{proto_dir}",
                f"-I{well_known}",
                f"--python_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                f"sendwerk/v1/{name}",
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed for {name}")
    sys.path.insert(0, out_dir)


def main():
    target, num_recipients = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as out_dir:
        generate_stubs(out_dir)
        from sendwerk.v1 import mailing_pb2 as pb
        from sendwerk.v1 import mailing_pb2_grpc as rpc

        channel = grpc.insecure_channel(target)
        mailings = rpc.MailingServiceStub(channel)
        mailing = mailings.CreateMailing(
            pb.CreateMailingRequest(
                content=pb.MailingContent(
                    name="from python",
                    subject_template="Hallo {{ first_name }}",
                    text_template="Hallo {{ first_name }}, Ihre Nummer ist {{ number }}.",
                    **{"from": pb.Address(email="python@shop.example", name="Python Client")},
                )
            )
        )

        def rows():
            batch = []
            for i in range(num_recipients):
                row = pb.RecipientRow(email=f"py{i}@python.example", external_id=f"P{i}")
                row.variables.update({"first_name": f"Py{i}", "number": i})
                batch.append(row)
                if len(batch) == 100:
                    yield pb.AddRecipientsRequest(mailing_id=mailing.id, rows=batch)
                    batch = []
            if batch:
                yield pb.AddRecipientsRequest(mailing_id=mailing.id, rows=batch)

        added = mailings.AddRecipients(rows())
        mailings.Schedule(pb.ScheduleRequest(mailing_id=mailing.id))
        last = None
        for update in mailings.WatchMailing(pb.MailingRef(mailing_id=mailing.id), timeout=120):
            last = update
        result = {
            "mailing_id": mailing.id,
            "accepted": added.accepted,
            "state": pb.MailingState.Name(last.state),
            "sent": last.counts.sent,
            "total": last.counts.total,
        }
        print(json.dumps(result))
        ok = result["state"] == "MAILING_STATE_COMPLETED" and result["sent"] == num_recipients
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
