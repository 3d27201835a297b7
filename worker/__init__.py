"""The worker: Celery tasks that turn queued jobs into engine calls and report back.

`worker.celery_app:celery_app` is the app (`celery -A worker.celery_app:celery_app worker -Q
gpu,cpu --concurrency 1 --prefetch-multiplier 1 --pool prefork`, or `drl worker`); the one
task, `drl.run_job(job_id)`, is `worker.tasks.run_job`. Nothing here touches CUDA at import
time: the engine (and torch) is imported inside the job runners, in the pool process.
"""
