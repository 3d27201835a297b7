"""Which jobs have a "run job N" message in the broker right now.

The reaper compares this with the database (worker/reaper.py, `resend_stranded_jobs`): a
ready queued job whose message is in neither the queue nor a worker's hands was lost by the
broker (a Redis restarted without its data) and must be sent again, while a job waiting
behind a long backlog has its message and must not get another one every pass.

What counts as "in the broker", per transport of the app's `broker_url`:

- Redis (kombu's redis transport, every key under the app's `global_keyprefix`): the queue
  lists of every queue in `QUEUES`, one list per priority step (kombu's
  `Channel._q_for_pri`: the bare queue name for step 0, `<queue>\\x06\\x16<step>` for the
  others), and the `unacked` hash, where a message delivered to a worker stays until it is
  acknowledged (with acks_late: while it is reserved and while its job runs; values are
  `[envelope, exchange, routing_key]`). Lists and hash are read in one MULTI/EXEC, so a
  message the server moves meanwhile is not missed. A message between a worker's BRPOP and
  its HSET into `unacked` is in neither for a moment; the reaper may then re-send a job that
  is about to start, and the copy is dropped by the queued -> running compare-and-set.
- filesystem (the embedded mode): the `<ms>_<uuid>.<queue>.msg` files in the transport's
  data folder. A worker deletes a message's file when it takes the message, so a reserved
  or running job has none; a running job is not queued, so the reaper does not ask about it.
- any other transport: not looked into (`None`).

A message is kombu's JSON envelope around Celery's protocol 2 body `[args, kwargs, embed]`
(base64 when `properties.body_encoding` says so), the task's name in `headers.task`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu.transport.redis import Channel as RedisChannel

from drl_core.queue import QUEUES, TASK_RUN_JOB

# A reaper pass must not hang on a broker that does not answer; the next pass tries again.
REDIS_TIMEOUT_S = 5.0


class BrokerUnreadable(Exception):
    """The broker could not be read (down, refusing connections, not answering)."""


def run_job_ids_in_broker(celery_app: Celery) -> set[int] | None:
    """The job ids of the `drl.run_job` messages waiting in `celery_app`'s broker or held,
    unacknowledged, by a worker; None for a transport this module cannot look into.
    Raises `BrokerUnreadable` when the broker cannot be read."""
    broker_url = celery_app.conf.broker_url
    options = celery_app.conf.broker_transport_options or {}
    scheme = urlsplit(broker_url).scheme
    if scheme in ("redis", "rediss"):
        envelopes = redis_envelopes(broker_url, options.get("global_keyprefix", ""))
    elif scheme == "filesystem":
        envelopes = filesystem_envelopes(Path(options["data_folder_in"]))
    else:
        return None
    return {job_id for job_id in map(run_job_id, envelopes) if job_id is not None}


def run_job_id(envelope: Any) -> int | None:
    """The job id a message envelope asks to run; None for another task's message or one that
    does not parse (nothing of ours: it cannot stand for a job)."""
    try:
        if envelope["headers"]["task"] != TASK_RUN_JOB:
            return None
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        return int(args[0])
    except (KeyError, TypeError, ValueError, IndexError):   # binascii.Error is a ValueError
        return None


# --- Redis -------------------------------------------------------------------------------


def redis_queue_keys(queue: str) -> list[str]:
    """kombu's lists for `queue` (before the global key prefix), one per priority step."""
    return [f"{queue}{RedisChannel.sep}{step}" if step else queue
            for step in RedisChannel.priority_steps]


def redis_envelopes(broker_url: str, key_prefix: str) -> list[Any]:
    """Every message envelope in the queue lists and the `unacked` hash, read in one
    transaction. (redis-py directly: kombu's prefixing client leaves LRANGE and HVALS
    unprefixed, so the prefix is added here.)"""
    list_keys = [key_prefix + key for queue in QUEUES for key in redis_queue_keys(queue)]
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                  socket_timeout=REDIS_TIMEOUT_S)
    try:
        with client.pipeline(transaction=True) as pipe:
            for key in list_keys:
                pipe.lrange(key, 0, -1)
            pipe.hvals(key_prefix + RedisChannel.unacked_key)
            *queued, unacked = pipe.execute()
    except (redis.RedisError, OSError) as error:
        raise BrokerUnreadable(f"{type(error).__name__}: {error}") from error
    finally:
        client.close()
    envelopes = [parsed for items in queued for parsed in parse_json(items)]
    envelopes += [entry[0] for entry in parse_json(unacked)
                  if isinstance(entry, list) and entry]
    return envelopes


def parse_json(items: Iterable[bytes]) -> Iterator[Any]:
    """Each item parsed; one that is not JSON (not a message of ours) is left out."""
    for item in items:
        try:
            yield json.loads(item)
        except ValueError:
            continue


# --- filesystem --------------------------------------------------------------------------


def filesystem_envelopes(folder: Path) -> Iterator[Any]:
    """The envelopes of the message files of every queue in `folder`. A file that vanishes
    (a worker took it) or does not parse (still being written: the sender creates, locks,
    then writes) is left out; such a message is seconds old and its job not yet a
    candidate for re-sending."""
    for queue in QUEUES:
        for path in folder.glob(f"*.{queue}.msg"):
            try:
                yield json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
