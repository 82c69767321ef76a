SELECT count(*) FROM workers WHERE heartbeat_at > now() - make_interval(secs => $1)
