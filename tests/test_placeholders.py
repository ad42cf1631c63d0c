"""Placeholders and the two path-resolution stages (jobs.md §2)."""

from hypothesis import given
from hypothesis import strategies as st

from hyperq.common.placeholders import (
    KNOWN_PLACEHOLDERS,
    fill,
    has_placeholders,
    resolve_paths,
    submit_values,
    task_values,
    unknown_placeholders,
)

D = "/home/user/project"
DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"


def stage1(cwd, stdout, stderr, job_id=1, submit_dir=D, uid="uid1"):
    return resolve_paths(cwd, stdout, stderr, submit_values(job_id, submit_dir, uid), submit_dir)


def stage2(paths, job_id=1, task_id=0, instance=0, submit_dir=D, uid="uid1"):
    values = task_values(job_id, task_id, instance, submit_dir, uid)
    return resolve_paths(*paths, values, submit_dir)


def test_fill_known_and_unknown():
    values = {"JOB_ID": "5", "TASK_ID": "7"}
    assert fill("a-%{JOB_ID}-%{TASK_ID}-%{FOO}", values) == "a-5-7-%{FOO}"
    assert fill("no placeholders", values) == "no placeholders"
    assert fill("%", values) == "%"
    assert fill("%{JOB_ID", values) == "%{JOB_ID"
    assert fill("%{}x", values) == "%{}x"
    assert fill("%{JOB_ID}%{JOB_ID}", values) == "55"
    assert fill("100%{JOB_ID}%", values) == "1005%"


def test_unknown_placeholders():
    assert unknown_placeholders("dir/%{BAR}/%{BAZ}") == ["BAR", "BAZ"]
    assert unknown_placeholders("dir/%{TAS_ID}/%{TASK_ID}") == ["TAS_ID"]
    assert unknown_placeholders("%{JOB_ID}%{CWD}%{SUBMIT_DIR}%{SERVER_UID}%{INSTANCE_ID}") == []
    assert unknown_placeholders("plain") == []
    assert unknown_placeholders("%{}") == [""]


def test_has_placeholders():
    assert has_placeholders("a/%{X}")
    assert not has_placeholders("a/%{X")
    assert not has_placeholders("100%")


def test_default_paths():
    paths = stage1("%{SUBMIT_DIR}", DEFAULT_STDOUT, DEFAULT_STDERR)
    assert paths == (D, f"{D}/job-1/%{{TASK_ID}}.stdout", f"{D}/job-1/%{{TASK_ID}}.stderr")
    assert stage2(paths, task_id=3) == (D, f"{D}/job-1/3.stdout", f"{D}/job-1/3.stderr")


def test_absolute_cwd_without_placeholders():
    paths = stage1("/tmp/foo", DEFAULT_STDOUT, DEFAULT_STDERR)
    assert paths[1] == "/tmp/foo/job-1/%{TASK_ID}.stdout"
    assert stage2(paths) == ("/tmp/foo", "/tmp/foo/job-1/0.stdout", "/tmp/foo/job-1/0.stderr")


def test_cwd_with_task_id():
    paths = stage1("/tmp/%{TASK_ID}", DEFAULT_STDOUT, DEFAULT_STDERR)
    assert paths == (
        "/tmp/%{TASK_ID}",
        "/tmp/%{TASK_ID}/job-1/%{TASK_ID}.stdout",
        "/tmp/%{TASK_ID}/job-1/%{TASK_ID}.stderr",
    )
    assert stage2(paths) == ("/tmp/0", "/tmp/0/job-1/0.stdout", "/tmp/0/job-1/0.stderr")


def test_instance_id_paths():
    paths = stage1("%{INSTANCE_ID}-dir", "%{INSTANCE_ID}.out", "%{INSTANCE_ID}.err")
    assert paths == ("%{INSTANCE_ID}-dir", "%{INSTANCE_ID}.out", "%{INSTANCE_ID}.err")
    assert stage2(paths) == (f"{D}/0-dir", f"{D}/0-dir/0.out", f"{D}/0-dir/0.err")
    assert stage2(paths, instance=2)[1] == f"{D}/2-dir/2.out"


def test_server_uid_resolved_at_submit():
    paths = stage1("%{SUBMIT_DIR}", "out-%{SERVER_UID}-%{JOB_ID}", None, uid="abcd")
    assert paths == (D, f"{D}/out-abcd-1", None)


def test_submit_stage_like_original():
    paths = resolve_paths(
        "%{SUBMIT_DIR}/%{SERVER_UID}/%{JOB_ID}-%{TASK_ID}",
        "%{CWD}/out",
        "%{CWD}/err",
        submit_values(5, "/foo", "testHQ"),
        "/foo",
    )
    assert paths == (
        "/foo/testHQ/5-%{TASK_ID}",
        "/foo/testHQ/5-%{TASK_ID}/out",
        "/foo/testHQ/5-%{TASK_ID}/err",
    )


def test_task_stage_like_original():
    values = task_values(5, 10, 6, "/foo", "testHQ")
    paths = resolve_paths(
        "%{SERVER_UID}-%{TASK_ID}-%{INSTANCE_ID}",
        "%{JOB_ID}/stdout",
        "%{JOB_ID}/stderr",
        values,
        "/foo",
    )
    assert paths == ("/foo/testHQ-10-6", "/foo/testHQ-10-6/5/stdout", "/foo/testHQ-10-6/5/stderr")
    values = task_values(1, 2, 3, "/foo", "testHQ")
    paths = resolve_paths(
        "bar/%{JOB_ID}", "%{CWD}/%{TASK_ID}.out", "%{CWD}/%{TASK_ID}.err", values, "/foo"
    )
    assert paths == ("/foo/bar/1", "/foo/bar/1/2.out", "/foo/bar/1/2.err")


def test_none_outputs_pass_through():
    assert stage2(stage1("%{SUBMIT_DIR}", None, None)) == (D, None, None)


def test_plain_output_with_unresolved_relative_cwd_is_joined_once():
    paths = stage1("%{TASK_ID}", "out.txt", "/abs/err.txt")
    assert paths == ("%{TASK_ID}", "out.txt", "/abs/err.txt")
    assert stage2(paths, task_id=4) == (f"{D}/4", f"{D}/4/out.txt", "/abs/err.txt")


def test_relative_paths_made_absolute():
    assert stage1("sub", "o", "e") == (f"{D}/sub", f"{D}/sub/o", f"{D}/sub/e")


def test_unknown_placeholder_keeps_path_verbatim():
    paths = stage1("%{SUBMIT_DIR}", "dir/%{BAR}/%{BAZ}", None)
    assert paths == (D, "dir/%{BAR}/%{BAZ}", None)
    assert stage2(paths) == (D, "dir/%{BAR}/%{BAZ}", None)


_literal = st.text(alphabet=st.characters(blacklist_characters="%{}"), max_size=8)
_name = st.one_of(
    st.sampled_from(sorted(KNOWN_PLACEHOLDERS)),
    st.text(alphabet=st.characters(blacklist_characters="}%{"), max_size=6),
)
_part = st.one_of(st.tuples(st.just("text"), _literal), st.tuples(st.just("name"), _name))


@given(st.lists(_part, max_size=8), st.dictionaries(_name, _literal, max_size=4))
def test_fill_substitutes_exactly_the_given_names(parts, values):
    template = "".join(v if kind == "text" else "%{" + v + "}" for kind, v in parts)
    expected = "".join(v if kind == "text" else values.get(v, "%{" + v + "}") for kind, v in parts)
    assert fill(template, values) == expected
    names = [v for kind, v in parts if kind == "name"]
    assert unknown_placeholders(template) == [n for n in names if n not in KNOWN_PLACEHOLDERS]
