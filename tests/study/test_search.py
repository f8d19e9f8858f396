"""A sweep's learning-rate search: screening runs on validation loss, the winner trained in full,
shared by the runs of one group, resumable, and invisible to the report."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from llmhub.cli import main
from llmhub.errors import HubError
from llmhub.study.grid import expand
from llmhub.study.records import load_records


def _grid(tmp_path, model_dir, data_dir, values) -> dict:
    base = {"pretrained_ckpt": str(model_dir), "data_dir": str(data_dir), "method": "lora", "train_samples": 16,
            "validation_samples": 4, "test_samples": 2, "epochs": 1, "max_steps": 4, "batch_size": 4,
            "lora_r": 4, "lora_alpha": 8, "max_source_length": 64, "max_target_length": 16, "max_new_tokens": 4,
            "eval_batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 2}
    return {"task": "summarization", "base": base,
            "search": {"key": "learning_rate", "values": {"lora": values}, "screen": {"max_steps": 2, "eval_steps": 2}},
            "runs": [{"name": "s1", "seed": 1}, {"name": "s2", "seed": 2},
                     {"name": "zero", "action": "baseline", "mode": "zero-shot"}]}


def _sweep(tmp_path, spec: dict) -> tuple[Path, Path]:
    """`spec` written to a grid file and swept into tmp_path/out: the grid file and that folder."""
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    main(["sweep", str(grid), "--output_root", str(out)])
    return grid, out


def test_search_picks_the_lowest_validation_loss_and_is_shared(tiny_models, data_dir, tmp_path, capsys):
    # 1e-7 barely moves the adapter; 5e-2 on a tiny random model lowers the validation loss far more
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    grid, out = _sweep(tmp_path, spec)
    screens = {p.parent.name: json.loads(p.read_text()) for p in (out / "screen").glob("*/results.json")}
    group = f"{tiny_models['llama'].name}_lora"  # the search's default group: {pretrained_ckpt}_{method}
    assert sorted(screens) == [f"{group}_learning_rate-0.05", f"{group}_learning_rate-1e-07"]
    assert all(r["mode"] == "screen" and r["train"]["steps"] == 2 and r["metrics"] == {} for r in screens.values())
    assert not any((out / "screen" / n / "predictions.jsonl").exists() for n in screens)  # no test split
    losses = {n: r["validation"]["loss"] for n, r in screens.items()}
    best = min(losses, key=losses.get)
    chosen = screens[best]["config"]["train"]["learning_rate"]
    for name in ("s1", "s2"):  # both seeds take the winner of the one screening
        record = json.loads((out / name / "results.json").read_text())
        assert record["config"]["train"]["learning_rate"] == chosen and record["train"]["steps"] == 4
    log = capsys.readouterr().out
    assert log.count(f"screen {group}") == 2  # screened once, before s1 only
    assert [r.path.parent.name for r in load_records(out)] == ["s1", "s2", "zero"]  # screens are not results
    # rerun: everything is finished, nothing runs again
    main(["sweep", str(grid), "--output_root", str(out)])
    assert "3 runs: 0 to run, 3 finished" in capsys.readouterr().out


def test_search_resumes_after_a_killed_screen(tiny_models, data_dir, tmp_path, capsys):
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    spec["runs"] = spec["runs"][:1]
    grid, out = _sweep(tmp_path, spec)
    first = json.loads((out / "s1" / "results.json").read_text())
    (out / "s1" / "results.json").unlink()  # as if killed: one screen and the run are redone
    group = f"{tiny_models['llama'].name}_lora"
    (out / "screen" / f"{group}_learning_rate-0.05" / "results.json").unlink()
    capsys.readouterr()
    main(["sweep", str(grid), "--output_root", str(out)])
    log = capsys.readouterr().out
    assert log.count(f"screen {group}") == 1
    again = json.loads((out / "s1" / "results.json").read_text())
    assert again["config"]["train"]["learning_rate"] == first["config"]["train"]["learning_rate"]


def test_extend_screens_above_the_range_while_its_top_wins(tiny_models, data_dir, tmp_path, capsys):
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    spec["search"]["extend"] = {"lora": [0.5, 5.0]}
    spec["runs"] = spec["runs"][:1]
    grid, out = _sweep(tmp_path, spec)
    losses = {r["config"]["train"]["learning_rate"]: r["validation"]["loss"]
              for r in map(json.loads, map(Path.read_text, (out / "screen").glob("*/results.json")))}
    expected = [1.0e-7, 5.0e-2]  # the rule, replayed on the losses: the next value while the top wins
    for more in (0.5, 5.0):
        if min(expected, key=losses.get) != max(expected):
            break
        expected.append(more)
    assert len(expected) >= 3 and sorted(losses) == expected  # 5e-2 beats 1e-7: the range was extended
    chosen = json.loads((out / "s1" / "results.json").read_text())["config"]["train"]["learning_rate"]
    assert chosen == min(losses, key=losses.get)


def test_screen_only_screens_finished_runs_and_names_a_changed_choice(tiny_models, data_dir, tmp_path, capsys):
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7])
    spec["runs"] = spec["runs"][:1]
    grid, out = _sweep(tmp_path, spec)
    before = (out / "s1" / "results.json").read_text()
    spec["search"]["extend"] = {"lora": [5.0e-2]}  # the lone value "wins": 5e-2 is screened, and wins
    grid.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    main(["sweep", str(grid), "--output_root", str(out), "--screen_only"])
    log = capsys.readouterr().out
    assert log.count("screen ") == 1 and "learning_rate-0.05" in log
    assert (out / "s1" / "results.json").read_text() == before  # the finished run is not retrained
    assert f"note: s1: its search now chooses learning_rate=0.05 (it trained with 1e-07); remove {out / 's1'}" in log


def test_screens_need_no_eval_engine(tiny_models, data_dir, tmp_path, monkeypatch):
    """A screening run never evaluates on the test split: vLLM's environment is checked by the run
    that does, not by its screens."""
    from llmhub.study import sweep

    monkeypatch.setenv("LLMHUB_VLLM_PYTHON", str(tmp_path / "no-python"))
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    spec["base"]["eval_engine"] = "vllm"
    spec["runs"] = spec["runs"][:1]
    runs = expand(spec, tmp_path / "out")
    assert [r["status"] for r in sweep.run_sweep(runs, screen_only=True)] == ["done", "done"]
    (result,) = sweep.run_sweep(runs)
    assert result["status"] == "failed" and f"no python at {tmp_path / 'no-python'}" in result["error"]


def _learning_rate(path: Path) -> float:
    return json.loads(path.read_text())["config"]["train"]["learning_rate"]


def _second_rung_grid(tmp_path, tiny_models, data_dir) -> dict:
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    spec["search"]["finalists"] = 2
    spec["runs"] = spec["runs"][:2]
    return spec


def _check_second_rung(out: Path, group: str) -> tuple[float, float]:
    """The screens' winner and the value chosen at full length, checked against the files."""
    screens = {_learning_rate(p): json.loads(p.read_text())["validation"]["loss"]
               for p in (out / "screen").glob(f"{group}_learning_rate-*[0-9]/results.json")}
    winner = min(screens, key=screens.get)
    s1 = json.loads((out / "s1" / "results.json").read_text())
    assert s1["config"]["train"]["learning_rate"] == winner  # the lead trains first, with the screens' winner
    (full,) = (out / "screen").glob("*_full/results.json")  # the other finalist only: s1 is the winner's
    other = json.loads(full.read_text())
    assert other["mode"] == "screen" and other["train"]["steps"] == 4 and other["metrics"] == {}  # the whole recipe
    assert other["config"]["train"]["learning_rate"] != winner and other["config"]["train"]["seed"] == 1
    at_full = {winner: s1["validation"]["loss"], _learning_rate(full): other["validation"]["loss"]}
    chosen = min(at_full, key=at_full.get)
    assert _learning_rate(out / "s2" / "results.json") == chosen
    return winner, chosen


def test_second_rung_trains_the_finalists_in_full_and_chooses_on_their_loss(tiny_models, data_dir, tmp_path, capsys):
    grid, out = _sweep(tmp_path, _second_rung_grid(tmp_path, tiny_models, data_dir))
    log = capsys.readouterr().out
    group = f"{tiny_models['llama'].name}_lora"
    winner, chosen = _check_second_rung(out, group)
    assert log.index("s1: train") < log.index(f"full-length {group}_learning_rate-") < log.index("s2: train")
    assert (f"note: s1: its search now chooses learning_rate={chosen:g}" in log) == (chosen != winner)
    main(["sweep", str(grid), "--output_root", str(out)])
    assert "2 runs: 0 to run, 2 finished" in capsys.readouterr().out


def test_a_lead_overturned_at_full_length_is_kept_as_its_values_run_and_retrained(tiny_models, data_dir, tmp_path,
                                                                                 capsys):
    grid, out = _sweep(tmp_path, _second_rung_grid(tmp_path, tiny_models, data_dir))
    (full,) = (out / "screen").glob("*_full/results.json")
    record = json.loads(full.read_text())
    lead_loss = json.loads((out / "s1" / "results.json").read_text())["validation"]["loss"]
    record["validation"]["loss"] = lead_loss - 1.0  # the other finalist wins at full length
    full.write_text(json.dumps(record))
    used, other = _learning_rate(out / "s1" / "results.json"), record["config"]["train"]["learning_rate"]
    capsys.readouterr()
    main(["sweep", str(grid), "--output_root", str(out), "--dry-run"])
    note = (f"note: s1: its search now chooses learning_rate={other:g} (it trained with {used:g}); "
            f"move {out / 's1'} to ")
    log = capsys.readouterr().out
    assert note in log
    kept = Path(log.split(note)[1].split(" ")[0])
    assert kept.parent == out / "screen" and kept.name.endswith("_full") and not kept.exists()
    (out / "s1").rename(kept)  # as the note says
    main(["sweep", str(grid), "--output_root", str(out), "--only", "s1"])
    assert _learning_rate(out / "s1" / "results.json") == other  # not the screens' winner again
    main(["sweep", str(grid), "--output_root", str(out), "--dry-run"])
    assert "note: s1:" not in capsys.readouterr().out


def test_second_rung_on_ray(tiny_models, data_dir, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    from llmhub.study import sweep

    ray = sweep.init_ray(None, {"num_cpus": 2})
    try:
        out = tmp_path / "out"
        runs = expand(_second_rung_grid(tmp_path, tiny_models, data_dir), out)
        results = sweep.run_sweep(runs, backend="ray", cpus_per_trial=1, gpus_per_trial=0)
        assert [r["status"] for r in results] == ["done"] * 5, results  # 2 screens, s1, 1 full-length, s2
        _check_second_rung(out, f"{tiny_models['llama'].name}_lora")
    finally:
        ray.shutdown()


def test_a_second_rung_added_later_runs_with_screen_only(tiny_models, data_dir, tmp_path, capsys):
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    spec["runs"] = spec["runs"][:1]
    grid, out = _sweep(tmp_path, spec)  # one rung
    before = (out / "s1" / "results.json").read_text()
    spec["search"]["finalists"] = 2
    grid.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    main(["sweep", str(grid), "--output_root", str(out), "--dry-run"])
    log = capsys.readouterr().out
    other = next(v for v in (1.0e-7, 5.0e-2) if v != _learning_rate(out / "s1" / "results.json"))
    assert f"note: s1: its search has not finished (full-length learning_rate={other:g} to run); " in log
    assert not list((out / "screen").glob("*_full"))
    main(["sweep", str(grid), "--output_root", str(out), "--screen_only"])
    log = capsys.readouterr().out
    assert log.count("full-length ") == 1 and log.count("screen ") == 0  # screens finished; s1 counts for its value
    assert (out / "s1" / "results.json").read_text() == before
    assert "has not finished" not in log


def test_a_run_that_sets_the_key_itself_is_not_searched(tiny_models, data_dir, tmp_path):
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1.0e-7, 5.0e-2])
    spec["runs"] = [{"name": "searched"}, {"name": "own", "method": "full", "learning_rate": 2.0e-5}]
    searched, own = expand(spec, tmp_path / "out")
    assert [s.name for s in searched.screens] == [f"{tiny_models['llama'].name}_lora_learning_rate-{v}"
                                                  for v in ("1e-07", "0.05")]
    assert own.screens == [] and own.search_key is None  # no values for 'full' asked for either
    assert own.config["train"]["learning_rate"] == 2.0e-5


@pytest.mark.parametrize("search,message", [
    ({"key": "learning_rate", "values": [1e-3]}, "expected {key, values, screen[, group, extend, finalists]}"),
    ({"key": "learning_rate", "values": [1e-3], "screen": {"eval_steps": 1}, "finalists": 0},
     "finalists must be a whole number >= 1 (1: no second rung), got 0"),
    ({"key": "nope", "values": [1e-3], "screen": {"eval_steps": 1}}, "key 'nope' is not a config key"),
    ({"key": "learning_rate", "values": [], "screen": {"eval_steps": 1}}, "non-empty list"),
    ({"key": "learning_rate", "values": [1e-3], "screen": {"max_steps": 2}}, "screen must set eval_steps"),
    ({"key": "learning_rate", "values": [1e-3], "screen": 10}, "screen must be a mapping of config keys, got 10"),
    ({"key": "learning_rate", "values": {"ia3": [1e-3]}, "screen": {"eval_steps": 1}}, "no values for method 'lora'"),
    ({"key": "learning_rate", "values": [1e-3], "screen": {"eval_steps": 1}, "extend": []}, "extend must be a non-empty"),
    ({"key": "learning_rate", "values": [1e-3], "screen": {"eval_steps": 1}, "extend": [3e-3, 2e-3]},
     "extend [0.003, 0.002] must rise from above the largest value (0.001)"),
    ({"key": "learning_rate", "values": [1e-3], "screen": {"eval_steps": 1}, "extend": [1e-4]}, "must rise from above"),
])
def test_bad_search_blocks_fail_before_anything_runs(tiny_models, data_dir, tmp_path, search, message):
    spec = _grid(tmp_path, tiny_models["llama"], data_dir, [1e-3]) | {"search": search}
    with pytest.raises(HubError, match=re.escape(message)):
        expand(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()
