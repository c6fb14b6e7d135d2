"""Hooks through which the domain hands work to the job queue after a commit.

`app.billing` never imports `jobs`: it writes an outbox row in the caller's transaction and calls
whatever hook is registered here once that transaction commits. `create_app()` registers them, so
the web process, workers and scripts all enqueue the same way; the periodic sweeps cover anything
an enqueue loses.
"""


def register_job_hooks() -> None:
    from app import platform_notify
    from app.billing import notifications, refunds, settlement_requests
    from jobs.dunning import enqueue_platform_delivery
    from jobs.notifications import enqueue_notification_sends
    from jobs.queue import enqueue_settlement
    from jobs.refunds import enqueue_refund_send

    settlement_requests.set_settlement_enqueuer(enqueue_settlement)
    refunds.register_refund_sender(enqueue_refund_send)
    notifications.register_notification_sender(enqueue_notification_sends)
    platform_notify.set_delivery_enqueuer(enqueue_platform_delivery)
