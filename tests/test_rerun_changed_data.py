"""Issue 10: changing one concept's data redoes only that concept. Two things make it work:

1. ``jobs/runtime/dag.py`` keys the fit stage on the dataset's content hash and the model
   fingerprint (with the settings and the catalog), so after an edit the rerun refits the
   edited concept and skips the other;
2. the collection replaces the stored examples of an edited dataset, and each shard's
   manifest records a digest of the texts it was computed from, so stale shards are
   redone rather than reused.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_dataset


def test_changing_one_concept_redoes_only_that_concept(catalog_home: Path, tmp_path: Path) -> None:
    from catalog import Catalog
    from jobs.runtime.dag import run_job
    from jobs.runtime.spec import load_job

    mood = write_dataset(tmp_path / "mood.jsonl", labels=("mood_hi", "mood_lo"))
    tone = write_dataset(tmp_path / "tone.jsonl", labels=("tone_hi", "tone_lo"))
    spec = tmp_path / "fleet.toml"
    spec.write_text('[job]\nname = "f"\nmodels = ["tiny:llama:2x16"]\nexecutor = "local"\n[fit]\n'
                    f'concepts = ["{mood}", "{tone}"]\nmethods = ["mean_diff"]\npositions = ["last"]\n'
                    "layers = [1]\n")
    run_job(load_job(spec), home=catalog_home, show_progress=False, log=lambda _: None)
    write_dataset(tone, n_pairs=13, labels=("tone_hi", "tone_lo"))  # one more pair
    logs: list[str] = []
    run_job(load_job(spec), home=catalog_home, show_progress=False, log=logs.append)
    assert [line[:6] for line in logs if not line.startswith(("[done]", "[plan]"))] == ["[skip]", "[run ]"]
    assert sum(line.startswith("[plan]") for line in logs) == 1   # how the stages are scheduled, said once
    cat = Catalog(home=catalog_home)
    assert len(cat.versions("mood")) == 1 and len(cat.versions("tone")) == 2
