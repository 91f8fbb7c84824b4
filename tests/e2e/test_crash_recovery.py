"""RAND-5 across a crash: `trialdesk serve` runs as a subprocess on each database while client
threads randomize over HTTP; it is SIGKILLed after 4, 10 and 20 successful randomizations
(counted from the responses) and restarted each time.

Afterwards every randomization a client saw succeed is in the database with the same number
and arm, no subject or slot is used twice, the slots used are a prefix of each stratum (the
cursor just past them), the audit chain verifies, and each request that was in flight at the
kill, retried with its Idempotency-Key after the restart, got exactly one allocation.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.factory import ready_to_randomize
from tests.server import Server
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import AllocationSlotRow, RandomizationRow, StratumCursorRow, SubjectRow

SITES = ["S101", "S102", "S103", "S104"]
KILL_AFTER = [4, 10, 20]  # total successful randomizations seen when the server is killed
PER_SITE = 8  # 32 subjects: enough for the last kill point plus the requests in flight
STUDY = "/api/v1/studies/FLAGSHIP"


@dataclass
class Seen:
    """What the clients saw: the answer to each randomization, and the requests that got none."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: dict[str, tuple[str, str]] = field(default_factory=dict)  # subject -> (number, arm)
    in_flight: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    reached: threading.Event = field(default_factory=threading.Event)
    target: int = 0

    def success(self, subject: str, body: dict[str, object]) -> None:
        arm = body["arm"]
        assert isinstance(arm, dict)
        with self.lock:
            self.ok[subject] = (str(body["randomization_number"]), str(arm["code"]))
            if len(self.ok) >= self.target:
                self.reached.set()


def _randomize(client: httpx.Client, base: str, token: str, subject: str) -> httpx.Response:
    return client.post(
        f"{base}{STUDY}/subjects/{subject}/randomize",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"{subject}-once"},
    )


def _site_client(
    base: str, token: str, queue: list[str], seen: Seen, stop: threading.Event
) -> None:
    """Randomize this site's subjects one after another until the server goes away."""
    with httpx.Client(timeout=30.0) as client:
        while queue and not stop.is_set():
            subject = queue[0]
            try:
                response = _randomize(client, base, token, subject)
            except httpx.TransportError:
                with seen.lock:
                    seen.in_flight.append(queue.pop(0))
                return
            queue.pop(0)
            if response.status_code == 200:
                seen.success(subject, response.json())
            else:
                with seen.lock:
                    seen.refused.append(f"{subject}: {response.status_code} {response.text}")


def _prepare(trial: Trial) -> dict[str, list[str]]:
    queues = {site: ready_to_randomize(trial, site, count=PER_SITE) for site in SITES}
    for site in SITES:
        j.staff(trial, "implanter", site)  # the site's implanting-team user
    return queues


def _url(trial: Trial) -> str:
    """The trial's database for a child process (on PostgreSQL a database of its own)."""
    return trial.runtime.context.settings.database_url


def _check_database(trial: Trial, seen: Seen) -> None:
    with trial.ctx.uow(readonly=True) as uow:
        rows = uow.session.execute(
            select(SubjectRow.number, RandomizationRow).join(
                RandomizationRow, RandomizationRow.subject_id == SubjectRow.id
            )
        ).all()
        stored = {n: (r.number, trial.ctx.cipher.decrypt(r.arm_enc)) for n, r in rows}
        slot_ids = [r.slot_id for _, r in rows]
        used: dict[str, list[int]] = defaultdict(list)
        for slot in uow.session.scalars(
            select(AllocationSlotRow).where(AllocationSlotRow.used_by_subject_id.is_not(None))
        ):
            used[slot.stratum].append(slot.sequence)
        cursors = {
            c.stratum: c.next_sequence for c in uow.session.scalars(select(StratumCursorRow))
        }
        chain = verify_chain(uow.session)
    # every success a client saw is stored as seen; nothing is stored that no client saw
    assert stored == seen.ok
    assert len(set(slot_ids)) == len(slot_ids) and None not in slot_ids
    for stratum, sequences in used.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), stratum
        assert cursors[stratum] == len(sequences) + 1, stratum
    assert chain.ok, chain.problem


def test_rand5_server_killed_mid_load_loses_and_duplicates_nothing(
    trial: Trial, tmp_path: Path
) -> None:
    queues = _prepare(trial)
    procedure_day = dt.datetime.combine(j.PROCEDURE, dt.time(12), tzinfo=dt.UTC)
    env = {
        "TRIALDESK_DATABASE_URL": _url(trial),
        "TRIALDESK_ALLOCATION_KEY_FILE": str(trial.ctx.settings.allocation_key_file),
        "TRIALDESK_CLOCK": procedure_day.isoformat(),
    }
    server = Server(env, tmp_path / "server.log")
    seen = Seen()
    try:
        server.start()
        with httpx.Client(base_url=server.base, timeout=30.0) as client:
            tokens = {
                site: client.post(
                    "/api/v1/auth/token",
                    json={
                        "username": j.staff(trial, "implanter", site).username,
                        "password": PASSWORD,
                    },
                ).json()["access_token"]
                for site in SITES
            }
        retried = 0
        for target in KILL_AFTER:
            # at least a few new successes in every phase, even after a large overshoot
            seen.target = max(target, len(seen.ok) + 3)
            seen.reached.clear()
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=_site_client, args=(server.base, tokens[s], queues[s], seen, stop)
                )
                for s in SITES
            ]
            for th in threads:
                th.start()
            assert seen.reached.wait(timeout=60), f"{target} randomizations not reached"
            server.kill()
            stop.set()
            for th in threads:
                th.join(timeout=60)
                assert not th.is_alive()
            server.start()
            # the requests cut off by the kill, retried with the same key: one allocation each
            retries, seen.in_flight = seen.in_flight, []
            retried += len(retries)
            with httpx.Client(timeout=30.0) as client:
                for subject in retries:
                    site = subject.split("-")[0]
                    again = _randomize(client, server.base, tokens[site], subject)
                    assert again.status_code == 200, again.text
                    seen.success(subject, again.json())
            assert not seen.refused, seen.refused
            _check_database(trial, seen)
        assert len(seen.ok) >= KILL_AFTER[-1]
        # the kills cut requests off (4 clients keep a request open nearly all the time)
        assert retried > 0
    finally:
        server.stop()
