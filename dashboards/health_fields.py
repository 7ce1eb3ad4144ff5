"""The gateway health fields both dashboards show: float fields ``health:<name>`` of ``gateway_status``."""

HEALTH = [  # field, title, unit, what a technician reads in it
    ("cpu_percent", "CPU", "percent", "CPU use of the gateway process (%)."),
    ("rss_mb", "Memory (RSS)", "decmbytes", "Resident memory of the gateway process (MB)."),
    ("disk_free_mb", "Free disk on the data dir", "decmbytes", "Free space where the outbox and logs live (MB)."),
    ("soc_temp_c", "SoC temperature", "celsius", "System-on-chip temperature where the board exposes it (°C)."),
    ("outbox_backlog", "Outbox backlog (health)", "short", "Messages waiting in the outbox for the broker."),
    ("outbox_oldest_age_s", "Oldest outbox message age", "s", "Age of the oldest message still waiting (s)."),
]
