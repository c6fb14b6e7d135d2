"""`rq worker -w jobs.worker.PaydeskWorker`: the worker class production and tests run.

RQ's default worker forks a fresh work-horse per job. Without help, every horse would import the
application and build the Flask app again (about two seconds here: reportlab, the Stripe SDK,
templates). This class builds the app once in the parent, so horses start warm; each horse then
drops the database connections it inherited, as SQLAlchemy requires after fork().
"""

from rq.worker import Worker


class PaydeskWorker(Worker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from jobs.runtime import warm_up

        warm_up()

    def main_work_horse(self, job, queue):
        from jobs.runtime import after_fork

        after_fork()
        super().main_work_horse(job, queue)
