"""The access file: parsed strictly, every mistake named with the file and the line of its
set; the visibility rules per audience."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.access import (
    AccessInvalid,
    Audience,
    load_access_config,
    may_read,
    visibility,
)

GOOD = """\
# sources in no set
default = "everyone"

[[sets]]
name = "hr"
paths = ["docs/hr", "docs/policies/salary-*.md"]
channels = ["C0HRTEAM1", "#hr-team"]
users = ["U012ABCDE"]
usergroups = ["S0HRLEADS"]

[[sets]]
name = "handbook"
paths = ["/srv/handbook/**/*.md"]
everyone = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "access.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_issue_example_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_access_config(write(tmp_path, GOOD))
    hr, handbook = config.sets
    assert config.default == "everyone"
    assert (hr.name, hr.line, handbook.line) == ("hr", 4, 11)
    base = tmp_path.resolve().as_posix()
    assert config.sets_of(f"{base}/docs/hr/pay.md") == {"hr"}
    assert config.sets_of(f"{base}/docs/hr") == {"hr"}
    assert config.sets_of(f"{base}/docs/hrx/pay.md") == frozenset()  # a folder, not a prefix
    assert config.sets_of(f"{base}/docs/policies/salary-2026.md") == {"hr"}
    assert config.sets_of(f"{base}/docs/policies/sub/salary-2026.md") == frozenset()
    assert config.sets_of("/srv/handbook/a/b/intro.md") == {"handbook"}
    assert config.sets_of("/srv/handbook/intro.md") == {"handbook"}
    assert config.sets_of("/srv/handbook/intro.txt") == frozenset()


@pytest.mark.parametrize(("text", "expected"), [
    ('default = "everyone"\n[[sets]\nname = "x"\n', "line 2"),  # TOML syntax
    ('default = "some"\n', "default"),
    ('defualt = "nobody"\n', "unknown key 'defualt'"),
    ('[[sets]]\nname = "a"\npaths = ["x"]\n\n[[sets]]\nname = "b"\npath = ["y"]\n',
     "line 5 (set 2): unknown key 'path'"),
    ('[[sets]]\nname = "a"\npaths = []\n', "line 1 (set 1): paths"),
    ('[[sets]]\nname = "a"\npaths = ["x"]\nchannels = ["general"]\n', "'general' is not"),
    ('[[sets]]\nname = "a"\npaths = ["x"]\nusers = ["bob"]\n', "'bob' is not"),
    ('[[sets]]\nname = "a"\npaths = ["x"]\nusergroups = ["U123"]\n', "'U123' is not"),
    ('[[sets]]\nname = "a"\npaths = ["x"]\neveryone = "yes"\n', "everyone"),
    ('[[sets]]\nname = "a"\npaths = ["x"]\n[[sets]]\nname = "a"\npaths = ["y"]\n',
     "line 4 (set 2): a second set named 'a'"),
])
def test_a_mistake_is_named_with_the_file_and_line(tmp_path: Path, text: str,
                                                    expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AccessInvalid) as raised:
        load_access_config(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AccessInvalid, match=r"KOTAE_ACCESS_FILE=.*cannot be read"):
        load_access_config(tmp_path / "nope.toml")


def test_a_channel_sees_its_sets_and_everyones_never_the_askers(tmp_path: Path) -> None:
    config = load_access_config(write(tmp_path, GOOD))
    assert visibility(config, Audience.in_channel("C0HRTEAM1")).sets == {"hr", "handbook"}
    general = visibility(config, Audience.in_channel("CGENERAL1"))
    assert general.sets == {"handbook"} and general.unassigned
    # the asker's own grant does not follow them into a channel: the audience has no user
    assert Audience.in_channel("CGENERAL1").user is None


@pytest.mark.parametrize("audience", [
    Audience.private("U012ABCDE"),
    Audience.private("U999", usergroups=frozenset({"S0HRLEADS"})),
    Audience.private("U999", channels=frozenset({"C0HRTEAM1"})),
])
def test_a_private_reader_sees_sets_granted_to_them(audience: Audience, tmp_path: Path) -> None:
    config = load_access_config(write(tmp_path, GOOD))
    assert "hr" in visibility(config, audience).sets


def test_a_private_reader_without_a_grant_sees_only_everyones(tmp_path: Path) -> None:
    config = load_access_config(write(tmp_path, GOOD))
    seen = visibility(config, Audience.private("U999", usergroups=frozenset({"SOTHER1"}),
                                               channels=frozenset({"CGENERAL1"})))
    assert seen.sets == {"handbook"}


def test_default_nobody_hides_sources_in_no_set(tmp_path: Path) -> None:
    config = load_access_config(write(tmp_path, GOOD.replace('"everyone"', '"nobody"', 1)))
    seen = visibility(config, Audience.in_channel("C0HRTEAM1"))
    assert not may_read(seen, frozenset())
    assert may_read(seen, frozenset({"hr"}))
    assert may_read(visibility(config, Audience.operator()), frozenset())


def test_a_source_in_two_sets_is_readable_through_either(tmp_path: Path) -> None:
    config = load_access_config(write(tmp_path, GOOD))
    seen = visibility(config, Audience.in_channel("CGENERAL1"))
    assert may_read(seen, frozenset({"hr", "handbook"}))
    assert not may_read(seen, frozenset({"hr"}))
