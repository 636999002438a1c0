"""Reading and writing swarm results tables in the Olmix and RegMix layouts."""

from pathlib import Path

import numpy as np
import pytest

from engine.errors import DataError
from engine.mixture_table import MixtureTable, read_tables, write_tables

REGMIX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "regmix"


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


@pytest.fixture
def olmix_files(tmp_path):
    ratios = _write(
        tmp_path / "ratios.csv",
        """
run_id,name,web,code,math
a,run-a,0.5,0.3,0.2
b,run-b,0.1,0.1,0.8
c,run-c,0.0,1.0,0.0
""",
    )
    metrics = _write(
        tmp_path / "metrics.csv",
        """
run_id,name,bpb_web,bpb_code
c,run-c,1.5,0.7
a,run-a,1.1,0.9
b,run-b,1.3,1.2
""",
    )
    return ratios, metrics


def test_reads_olmix_layout_and_joins_metrics_on_run_id(olmix_files):
    table = read_tables(*olmix_files)
    assert table.run_ids == ["a", "b", "c"]
    assert table.domains == ["web", "code", "math"]
    assert table.metric_names == ["bpb_web", "bpb_code"]
    np.testing.assert_allclose(table.ratios[1], [0.1, 0.1, 0.8])
    np.testing.assert_allclose(table.metrics[:, 0], [1.1, 1.3, 1.5])  # reordered to the ratios' runs


def test_reads_ratios_without_metrics(olmix_files):
    table = read_tables(olmix_files[0])
    assert table.metrics.shape == (3, 0) and table.metric_names == []


def test_reads_regmix_layout_with_prefixes_stripped(tmp_path):
    ratios = _write(tmp_path / "m.csv", "index,train_web,train_code\n1,0.25,0.75\n2,1.0,0.0")
    metrics = _write(tmp_path / "l.csv", "index,metric/web_loss\n2,3.0\n1,4.0")
    table = read_tables(ratios, metrics)
    assert table.run_ids == ["1", "2"] and table.domains == ["web", "code"]
    assert table.metric_names == ["web_loss"]
    np.testing.assert_allclose(table.metrics[:, 0], [4.0, 3.0])


@pytest.mark.skipif(not REGMIX.is_dir(), reason="RegMix swarm results not present")
def test_reads_real_regmix_files():
    table = read_tables(REGMIX / "train_mixture_1m.csv", REGMIX / "train_pile_loss_1m.csv")
    assert table.ratios.shape == (512, 17) and table.metrics.shape == (512, 13)
    assert "the_pile_pile_cc" in table.domains
    assert "the_pile_pile_cc_val_loss" in table.metric_names
    np.testing.assert_allclose(table.ratios.sum(axis=1), 1.0, atol=0.01)


def test_write_then_read_round_trips_in_olmix_layout(olmix_files, tmp_path):
    table = read_tables(*olmix_files)
    out_r, out_m = tmp_path / "out" / "ratios.csv", tmp_path / "out" / "metrics.csv"
    write_tables(table, out_r, out_m)
    assert out_r.read_text().splitlines()[0] == "run,web,code,math"
    back = read_tables(out_r, out_m)
    assert back.run_ids == table.run_ids and back.domains == table.domains
    np.testing.assert_allclose(back.ratios, table.ratios)
    np.testing.assert_allclose(back.metrics, table.metrics)


def test_subset_and_select_metrics(olmix_files):
    table = read_tables(*olmix_files)
    sub = table.subset([2, 0]).select_metrics(["bpb_code"])
    assert sub.run_ids == ["c", "a"]
    np.testing.assert_allclose(sub.metrics[:, 0], [0.7, 0.9])
    with pytest.raises(DataError, match="bpb_web, bpb_code"):
        table.select_metrics(["nope"])


@pytest.mark.parametrize(
    "ratios, metrics, message",
    [
        ("run,web,code\na,0.5,0.3", None, r"run 'a' has weights summing to 0\.8000.*sum to 1"),
        ("run,web,code\na,1.2,-0.2", None, r"run 'a' has a negative weight for 'code'"),
        ("run,web,code\na,0.5,", None, r"run 'a' has an empty weight 'code'; fill in a number"),
        ("run,web,code\na,0.5,nan", None, r"run 'a' has weight 'code' = nan"),
        ("run,web,code\na,0.5,half", None, r"run 'a' has weight 'code' = 'half', which is not a number"),
        ("run,web,code\na,0.5,0.5\na,0.4,0.6", None, r"lists run 'a' twice"),
        ("web,code\n0.5,0.5", None, r"has no run id column; add a column named 'run'"),
        ("run,name\na,x", None, r"has no domain columns"),
        ("", None, r"is empty"),
        ("run,web,code\na,0.5,0.5\nb,1,0", "run,loss\na,1.0", r"has no line for run 'b'"),
        ("run,web,code\na,0.5,0.5", "run,loss\na,1.0\nz,2.0", r"has run 'z'.*does not list"),
        ("run,web,code\na,0.5,0.5", "run,loss\na,", r"run 'a' has an empty metric 'loss'"),
        ("run,web,code\na,0.5,0.5", "run,loss\na,NaN", r"run 'a' has metric 'loss' = NaN"),
    ],
)
def test_validation_errors_name_file_run_and_fix(tmp_path, ratios, metrics, message):
    r = tmp_path / "ratios.csv"
    r.write_text(ratios)
    m = None
    if metrics is not None:
        m = tmp_path / "metrics.csv"
        m.write_text(metrics)
    with pytest.raises(DataError, match=message) as info:
        read_tables(r, m)
    assert str(tmp_path) in str(info.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_tables(tmp_path / "nope.csv")


def test_table_reshapes_empty_metrics():
    table = MixtureTable(["a"], ["x", "y"], [[0.5, 0.5]], [], [])
    assert table.metrics.shape == (1, 0)
