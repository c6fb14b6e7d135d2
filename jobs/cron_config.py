"""`rq cron jobs/cron_config.py --url $REDIS_URL`: enqueue the periodic jobs, each onto its queue."""

from rq import cron

from jobs.schedule import PERIODIC

for periodic in PERIODIC:
    cron.register(
        periodic.resolve(),
        queue_name=periodic.queue,
        interval=periodic.interval,
        cron=periodic.cron,
        name=periodic.name,
        job_timeout=1800,
        ttl=periodic.ttl,
    )
