DELETE FROM domain_settings WHERE domain = $1
