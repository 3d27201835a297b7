"""Which jobs have a "run job N" message in the broker right now, and in which queue.

The reaper compares this with the database (worker/reaper.py, `resend_stranded_jobs`): a
ready queued job whose message is in neither the queue nor a worker's hands was lost by the
broker (a Redis restarted without its data) and must be sent again, while a job waiting
behind a long backlog has its message and must not get another one every pass. Since a
message is a nudge for its queue (drl_core/fair_queue.py: it starts whichever job's turn it
is), a message still waiting whose own job has started meanwhile will start another job:
`BrokerMessages.waiting` says which queue each waiting message is in, so that the reaper
counts those spare nudges.

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
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class BrokerMessages:
    """The job ids of the `drl.run_job` messages in a broker: `waiting` in each queue (one
    entry per message, so a job sent twice is there twice), and `held`, delivered to a
    worker and not yet acknowledged (reserved, or its task running)."""

    waiting: dict[str, list[int]] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)

    @property
    def job_ids(self) -> set[int]:
        return {i for ids in self.waiting.values() for i in ids} | set(self.held)


def read_broker_messages(celery_app: Celery) -> BrokerMessages | None:
    """The `drl.run_job` messages in `celery_app`'s broker; None for a transport this module
    cannot look into. Raises `BrokerUnreadable` when the broker cannot be read."""
    broker_url = celery_app.conf.broker_url
    options = celery_app.conf.broker_transport_options or {}
    scheme = urlsplit(broker_url).scheme
    if scheme in ("redis", "rediss"):
        waiting, held = redis_envelopes(broker_url, options.get("global_keyprefix", ""))
    elif scheme == "filesystem":
        waiting, held = filesystem_envelopes(Path(options["data_folder_in"])), []
    else:
        return None
    return BrokerMessages({queue: job_ids(envelopes) for queue, envelopes in waiting.items()},
                          job_ids(held))


def run_job_ids_in_broker(celery_app: Celery) -> set[int] | None:
    """The job ids of the `drl.run_job` messages waiting in `celery_app`'s broker or held,
    unacknowledged, by a worker; None for a transport this module cannot look into.
    Raises `BrokerUnreadable` when the broker cannot be read."""
    messages = read_broker_messages(celery_app)
    return None if messages is None else messages.job_ids


def job_ids(envelopes: Iterable[Any]) -> list[int]:
    return [job_id for job_id in map(run_job_id, envelopes) if job_id is not None]


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


def redis_envelopes(broker_url: str, key_prefix: str) -> tuple[dict[str, list[Any]], list[Any]]:
    """The message envelopes in each queue's lists, and those in the `unacked` hash, read in
    one transaction. (redis-py directly: kombu's prefixing client leaves LRANGE and HVALS
    unprefixed, so the prefix is added here.)"""
    list_keys = [(queue, key_prefix + key) for queue in QUEUES for key in redis_queue_keys(queue)]
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                  socket_timeout=REDIS_TIMEOUT_S)
    try:
        with client.pipeline(transaction=True) as pipe:
            for _queue, key in list_keys:
                pipe.lrange(key, 0, -1)
            pipe.hvals(key_prefix + RedisChannel.unacked_key)
            *queued, unacked = pipe.execute()
    except (redis.RedisError, OSError) as error:
        raise BrokerUnreadable(f"{type(error).__name__}: {error}") from error
    finally:
        client.close()
    waiting: dict[str, list[Any]] = {queue: [] for queue in QUEUES}
    for (queue, _key), items in zip(list_keys, queued, strict=True):
        waiting[queue].extend(parse_json(items))
    held = [entry[0] for entry in parse_json(unacked) if isinstance(entry, list) and entry]
    return waiting, held


def parse_json(items: Iterable[bytes]) -> Iterator[Any]:
    """Each item parsed; one that is not JSON (not a message of ours) is left out."""
    for item in items:
        try:
            yield json.loads(item)
        except ValueError:
            continue


# --- filesystem --------------------------------------------------------------------------


def filesystem_envelopes(folder: Path) -> dict[str, list[Any]]:
    """The envelopes of each queue's message files in `folder`. A file that vanishes (a
    worker took it) or does not parse (still being written: the sender creates, locks,
    then writes) is left out; such a message is seconds old and its job not yet a
    candidate for re-sending."""
    return {queue: list(_message_files(folder, queue)) for queue in QUEUES}


def _message_files(folder: Path, queue: str) -> Iterator[Any]:
    for path in folder.glob(f"*.{queue}.msg"):
        try:
            yield json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
