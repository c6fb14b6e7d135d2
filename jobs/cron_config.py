"""`rq cron jobs/cron_config.py --url $REDIS_URL`: enqueue the periodic jobs onto the paydesk queue."""

from rq import cron

from jobs.queue import QUEUE_NAME
from jobs.schedule import PERIODIC

for periodic in PERIODIC:
    cron.register(
        periodic.resolve(),
        queue_name=QUEUE_NAME,
        interval=periodic.interval,
        cron=periodic.cron,
        name=periodic.name,
        job_timeout=1800,
    )
