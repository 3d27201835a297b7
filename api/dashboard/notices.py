"""What a page says after an action succeeded (`?done=<action>` on the page it redirects to).

Only these fixed sentences are shown, filled with ids: a link cannot make a page display
text of its author's choosing.
"""

from __future__ import annotations

from collections.abc import Mapping

NOTICES = {
    "cancel": "Cancel requested: queued jobs are cancelled, running ones stop at their next heartbeat.",
    "resume": "Resumed: every failed or cancelled job runs again from its last checkpoint.",
    "delete": "Experiment {id} was deleted, with its jobs and artifacts.",
    "samples": "Sample job {job} was queued; its grid appears below when it succeeds.",
    "encodings": "Encode job {job} was queued; its embeddings appear below when it succeeds.",
}


def notice_for(done: str, params: Mapping[str, str]) -> str | None:
    template = NOTICES.get(done)
    if template is None:
        return None
    ids = {name: params.get(name, "") for name in ("id", "job")}
    return template.format(**{name: value if value.isdigit() else "?" for name, value in ids.items()})
