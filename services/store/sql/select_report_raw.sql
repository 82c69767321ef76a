SELECT raw FROM inbound_reports WHERE id = $1
