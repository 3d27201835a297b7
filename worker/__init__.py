"""The worker: Celery tasks that turn queued jobs into engine calls and report back.

`worker.celery_app:celery_app` is the app (`celery -A worker.celery_app:celery_app worker -Q
gpu,cpu --concurrency 1 --prefetch-multiplier 1 --pool prefork`, or `drl worker`); the one
task, `drl.run_job(job_id)`, runs the job whose turn it is on the message's queue
(`worker.tasks.run_next_job`, drl_core/fair_queue.py). Nothing here touches CUDA at import
time: the engine (and torch) is imported inside the job runners, in the pool process.
"""
