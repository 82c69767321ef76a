SELECT domain, max_per_minute, paused FROM domain_settings
