"""Events rebuilt from the state of a server without a journal (`hq journal replay`)."""

from hyperq.server.journal.reconstruct import reconstruct
from hyperq.server.journal.restore import restore
from hyperq.server.journal.snapshot import decode_model, encode_model
from hyperq.server.model.events import JobCreated, TaskCanceled, TaskFinished, TaskStarted
from hyperq.server.model.jobs import TaskState
from hyperq.server.model.state import Model
from hyperq.transport.codec import decode_unbounded, encode_unbounded
from tests.test_model import Driver, submit_desc


def test_times_are_those_of_the_submit_and_of_the_cancel() -> None:
    d = Driver()
    d.connect(cpus=1)
    job = d.open_job()
    d.tick(5)
    d.submit(submit_desc([[0, 3, 1]]), job_id=job)
    submitted = d.now
    d.run()  # task 0 starts on the one CPU
    d.tick(7)
    d.submit(submit_desc([[10, 11, 1]]), job_id=job)
    d.tick(3)
    canceled = d.now
    d.do(d.model.cancel_job(job, now=canceled).events)

    for model in (restore(d.events), _through_a_snapshot(restore(d.events))):
        created = [e for e in reconstruct(model, 1.0) if isinstance(e, JobCreated)]
        assert [e.time for e in created] == [submitted, submitted + 7]
    events = reconstruct(d.model, 1.0)
    created = [e for e in events if isinstance(e, JobCreated)]
    assert [e.time for e in created] == [submitted, submitted + 7]
    # Every task canceled by that one cancel is one event at its time, running or not.
    (cancel,) = [e for e in events if isinstance(e, TaskCanceled)]
    assert cancel.time == canceled
    assert cancel.tasks == ((job, ((0, 3, 1), (10, 11, 1))),)
    (started,) = [e for e in events if isinstance(e, TaskStarted)]
    assert started.time == submitted
    assert [e.time for e in events] == sorted(e.time for e in events)
    view = d.model.task(job, 11)
    assert view is not None and view.state == TaskState.CANCELED
    assert view.finished_at == canceled


def test_separate_cancels_stay_separate_and_survive_a_snapshot() -> None:
    d = Driver()
    job = d.open_job()
    d.submit(submit_desc([[0, 9, 1]]), job_id=job)
    d.tick(2)
    first = d.now
    d.do([TaskCanceled(first, ((job, ((0, 4, 1),)),))])
    d.tick(2)
    second = d.now
    d.do([TaskCanceled(second, ((job, ((5, 9, 1),)),))])

    replayed = restore(d.events)
    again = _through_a_snapshot(replayed)
    for model in (d.model, replayed, again):
        cancels = [e for e in reconstruct(model, 1.0) if isinstance(e, TaskCanceled)]
        assert [(e.time, e.tasks) for e in cancels] == [
            (first, ((job, ((0, 4, 1),)),)),
            (second, ((job, ((5, 9, 1),)),)),
        ]
        assert not [e for e in reconstruct(model, 1.0) if isinstance(e, TaskFinished)]


def _through_a_snapshot(model: Model) -> Model:
    return decode_model(decode_unbounded(encode_unbounded(encode_model(model))))
