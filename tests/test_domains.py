import pytest

from engine.domains import Change, DomainSet, affected_set, apply_change, with_revision
from engine.errors import ConfigError, DataError, OlmixError
from engine.project import Project


def test_add_remove_revise_partition_affected(small_project):
    p = small_project
    root = p.root
    (root / "data/extra").mkdir()
    (root / "data/extra/a.txt").write_text("hello world\n" * 50)
    (root / "data/extra/b.txt").write_text("more text\n" * 50)
    before = p.domains
    after = apply_change(root, before, Change("add", "extra", sources=("data/extra/*.txt",)))
    after = apply_change(root, after, Change("remove", "decimal"))
    after = apply_change(root, after, Change("partition", "code", parts={"code:json": ("data/code/json.jsonl",),
                                                                       "code:email": ("data/code/email.jsonl",)}))
    (root / "data/notes/README.txt").write_text("revised notes\n" * 10)
    after = apply_change(root, after, Change("revise", "notes"))
    a = affected_set(before, after)
    assert a.added == ("extra",)
    assert a.removed == ("decimal",)
    assert a.partitioned == {"code": ("code:email", "code:json")}
    assert a.revised == ("notes",)
    assert a.unaffected == ()
    assert set(a.affected) == {"extra", "code:email", "code:json", "notes"}
    assert after.get("code:json").parent == "code"


def test_unaffected_domains_are_reported(small_project):
    p = small_project
    after = apply_change(p.root, p.domains, Change("remove", "decimal"))
    a = affected_set(p.domains, after)
    assert a.unaffected == ("code", "notes") and a.affected == ()


@pytest.mark.parametrize("change, message", [
    (Change("add", "code", sources=("data/notes/*.txt",)), "already exists"),
    (Change("remove", "nope"), "unknown domain 'nope'"),
    (Change("revise", "nope"), "unknown domain 'nope'"),
    (Change("add", "new", sources=("data/missing/*.txt",)), "matches no file"),
    (Change("add", "dup", sources=("data/notes/*.txt",)), "claimed by both"),
    (Change("partition", "code", parts={"a": ("data/code/json.jsonl",)}), "at least two parts"),
    (Change("partition", "code", parts={"a": ("data/code/json.jsonl",), "b": ("data/code/json.jsonl",)}), "claimed by both parts"),
    (Change("partition", "code", parts={"a": ("data/code/json.jsonl",), "b": ("data/notes/*.txt",)}), "not part of domain 'code'"),
    (Change("revise", "notes"), "same data"),
    (Change("add", "bad name!", sources=("x",)), "not valid"),
])
def test_bad_changes_one_sentence(small_project, change, message):
    with pytest.raises(OlmixError, match=message):
        apply_change(small_project.root, small_project.domains, change)


def test_partition_must_cover_parent(small_project):
    root = small_project.root
    (root / "data/code/extra.jsonl").write_text('{"text": "x = 1"}\n')
    domains = DomainSet(tuple(with_revision(root, d) for d in small_project.domains))
    with pytest.raises(ConfigError, match="do not cover"):
        apply_change(root, domains, Change("partition", "code", parts={"a": ("data/code/json.jsonl",), "b": ("data/code/email.jsonl",)}))


def test_empty_source_file_is_an_error(small_project):
    (small_project.root / "data/empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        apply_change(small_project.root, small_project.domains, Change("add", "e", sources=("data/empty.txt",)))


def test_revision_is_content_hash(small_project):
    root = small_project.root
    d = small_project.domains.get("notes")
    assert with_revision(root, d).revision == d.revision
    f = sorted((root / "data/notes").iterdir())[0]
    f.write_text(f.read_text() + "\nchanged")
    assert with_revision(root, d).revision != d.revision


def test_stage_persists_and_reloads(small_project):
    p = small_project
    p.stage(Change("remove", "decimal"))
    q = Project.load(p.root)
    assert [c.describe() for c in q.pending] == ["remove decimal"]
    assert "decimal" not in q.staged_domains()
    assert q.affected().removed == ("decimal",)
    q.discard_pending()
    assert not (p.root / "pending.toml").exists()


def test_domain_set_round_trip(small_project):
    data = small_project.domains.to_toml()
    again = DomainSet.from_toml(data, "domains.toml")
    assert again == small_project.domains
