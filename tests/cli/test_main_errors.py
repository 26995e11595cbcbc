"""`ldmkit.cli.main`: running out of memory is a one-line error, other crashes are not hidden."""

import pytest

import ldmkit.cli.generate as generate_cli
from ldmkit.cli import main


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: "
                                                                 "you tried to allocate 68719476736 bytes")])
def test_out_of_memory_is_one_line(monkeypatch, capsys, error):
    def run(args):
        raise error

    monkeypatch.setattr(generate_cli, "run_generate", run)
    assert main(["generate", "a cat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldmkit: error: out of memory") and err.count("\n") == 1


def test_other_runtime_errors_are_not_swallowed(monkeypatch):
    def run(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(generate_cli, "run_generate", run)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["generate", "a cat"])
