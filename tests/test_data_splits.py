"""Class splits, label remapping, registry facts and the train/val partition."""

import json
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_jax.data import registry, splits, trainval

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "cac-openset"
ARPL_REFERENCE = REFERENCE.parent / "arpl_splits"
REF_NAMES = {
    "mnist": "MNIST", "svhn": "SVHN", "cifar10": "CIFAR10",
    "cifar_plus_10": "CIFAR+10", "cifar_plus_50": "CIFAR+50", "tiny_imagenet": "TinyImageNet",
}
SIZES = {  # benchmark: (number known, number unknown, number of classes of the unknown source)
    "mnist": (6, 4, 10), "svhn": (6, 4, 10), "cifar10": (6, 4, 10),
    "cifar_plus_10": (4, 10, 100), "cifar_plus_50": (4, 50, 100), "tiny_imagenet": (20, 180, 200),
}
ALL = [(b, t, f) for b in splits.BENCHMARKS for t in range(5) for f in splits.FAMILIES]
CAC_FAMILIES = [(b, t, f) for b, t, f in ALL if f != "arpl2020"]


@pytest.mark.parametrize("benchmark,trial,family", ALL)
def test_split_sizes_disjoint_covering(benchmark, trial, family):
    known, unknown = splits.get_split(benchmark, trial, family)
    n_known, n_unknown, n_total = SIZES[benchmark]
    assert (len(known), len(unknown)) == (n_known, n_unknown)
    assert len(set(known)) == len(known) and len(set(unknown)) == len(unknown)
    if family != "arpl2020":  # the CAC families are stored sorted; arpl2020 in its files' order
        assert known == sorted(known) and unknown == sorted(unknown)
    assert all(0 <= c < n_total for c in unknown)
    if benchmark.startswith("cifar_plus"):
        assert all(0 <= c < 10 for c in known)  # CIFAR-10 ids; unknowns are CIFAR-100 ids
        if family != "arpl2020":
            assert known == [0, 1, 8, 9]
    else:
        assert not set(known) & set(unknown)
        assert set(known) | set(unknown) == set(range(n_total))


def test_default_family_is_neal2018():
    assert splits.get_split("cifar10", 0) == ([0, 1, 2, 4, 5, 9], [3, 6, 7, 8])
    assert splits.get_split("cifar10", 0, family="cac_random2020") == ([2, 3, 4, 6, 8, 9], [0, 1, 5, 7])


def test_cifar_plus_50_is_the_animals_in_every_trial_of_the_cac_families():
    for family in ("neal2018", "cac_random2020"):
        for t in range(5):
            assert splits.get_split("cifar_plus_50", t, family)[1] == list(splits.CIFAR100_ANIMALS)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference split files not available")
@pytest.mark.parametrize("benchmark,trial,family", CAC_FAMILIES)
def test_splits_match_reference_files(benchmark, trial, family):
    folder = "class_splits" if family == "neal2018" else "class_splits_old"
    ref = json.loads((REFERENCE / REF_NAMES[benchmark] / folder / f"{trial}.json").read_text())
    known, unknown = splits.get_split(benchmark, trial, family)
    assert known == sorted(ref["Known"])
    assert unknown == sorted(ref["Unknown"])


@pytest.mark.skipif(not ARPL_REFERENCE.is_dir(), reason="ARPL split files not available")
@pytest.mark.parametrize("benchmark", splits.BENCHMARKS)
@pytest.mark.parametrize("trial", range(5))
def test_arpl_splits_match_the_files_in_their_order(benchmark, trial):
    ref = json.loads((ARPL_REFERENCE / REF_NAMES[benchmark] / f"{trial}.json").read_text())
    known, unknown = splits.get_split(benchmark, trial, "arpl2020")
    assert known == ref["Known"] and unknown == ref["Unknown"]  # order included: label j is Known[j]
    assert splits.label_map(known, "arpl2020") == {c: j for j, c in enumerate(ref["Known"])}


def test_arpl_quirks_are_kept():
    get = lambda b, t: splits.get_split(b, t, "arpl2020")  # noqa: E731
    assert get("cifar10", 0)[0] == [0, 6, 4, 9, 1, 7] and set(get("cifar10", 0)[0]) == set(get("cifar10", 1)[0])
    assert set(get("svhn", 0)[0]) == set(get("svhn", 1)[0]) and get("svhn", 0)[0] != get("svhn", 1)[0]
    assert set(get("cifar_plus_10", 1)[0]) == set(get("cifar_plus_10", 2)[0])
    for t in range(5):
        assert get("cifar_plus_10", t)[1] == get("cifar_plus_50", t)[1][-10:]  # +10 is the end of +50
        assert get("cifar_plus_10", t)[0] == get("cifar_plus_50", t)[0]
    # Labels follow the file: CIFAR-10 trial 0 trains airplane as 0, frog as 1, deer as 2, ...
    assert splits.remap_labels(np.array([0, 6, 4, 9, 1, 7]), get("cifar10", 0)[0], "arpl2020").tolist() == list(range(6))
    assert splits.remap_labels(np.array([0, 6, 4, 9, 1, 7]), get("cifar10", 0)[0]).tolist() == [0, 3, 2, 5, 1, 4]


@pytest.mark.parametrize("bad", [-1, 5, 1.0, True, "0", None])
def test_bad_trial(bad):
    with pytest.raises(ValueError, match="trial"):
        splits.get_split("mnist", bad)


def test_bad_benchmark_and_family():
    with pytest.raises(ValueError, match="unknown benchmark 'imagenet'"):
        splits.get_split("imagenet", 0)
    with pytest.raises(ValueError, match="unknown split family 'old'"):
        splits.get_split("mnist", 0, family="old")


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(0, 199), min_size=1, max_size=40))
def test_label_remap_is_order_preserving_bijection(known):
    shuffled = list(known)[::-1]
    ranks = splits.remap_labels(np.array(shuffled), shuffled)
    assert ranks.dtype == np.int32
    assert sorted(ranks.tolist()) == list(range(len(known)))
    order = np.argsort(shuffled)
    assert np.all(np.diff(ranks[order]) == 1)  # rank among the sorted ids
    assert splits.label_map(shuffled) == {c: r for r, c in enumerate(sorted(known))}


def test_label_remap_example_and_error():
    # SPEC §5.4: CIFAR10 trial 0 maps 0→0, 1→1, 2→2, 4→3, 5→4, 9→5.
    assert splits.remap_labels(np.array([9, 4, 0, 5, 2, 1]), [0, 1, 2, 4, 5, 9]).tolist() == [5, 3, 0, 4, 2, 1]
    with pytest.raises(ValueError, match=r"\[3\] are not known classes"):
        splits.remap_labels(np.array([0, 3]), [0, 1, 2])


def test_registry_matches_spec():
    cifar = registry.get_spec("cifar10")
    assert (cifar.image_size, cifar.flip, cifar.rotate, cifar.scale_min, cifar.train_fraction) == (32, 0.5, 10.0, 0.8, 0.8)
    assert cifar.mean(1) == (0.4850, 0.4598, 0.4032) and cifar.std(4) == (0.2512, 0.2487, 0.2685)
    tiny = registry.get_spec("tiny_imagenet")
    assert (tiny.image_size, tiny.flip, tiny.rotate, tiny.scale_min, tiny.train_fraction) == (64, 0.5, 20.0, 0.7, 0.9)
    mnist = registry.get_spec("mnist")
    assert (mnist.image_size, mnist.native_size, mnist.channels, mnist.flip, mnist.rotate) == (32, 28, 1, 0.0, 0.0)
    assert registry.get_spec("cifar_plus_50").unknown_source == "cifar100"
    for spec in registry.SPECS.values():
        assert len(spec.means) == len(spec.stds) == 5
        assert all(len(m) == len(s) == spec.channels for m, s in zip(spec.means, spec.stds))
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        registry.get_spec("cifar")
    with pytest.raises(ValueError, match="trial"):
        mnist.mean(7)


@pytest.mark.skipif(not (REFERENCE / "config.json").is_file(), reason="reference config not available")
def test_registry_matches_reference_config():
    config = json.loads((REFERENCE / "config.json").read_text())
    for name, ref in REF_NAMES.items():
        spec, cfg = registry.get_spec(name), config[ref]
        assert spec.image_size == cfg["im_size"] and spec.channels == cfg["im_channels"]
        t = cfg["data_transforms"]
        assert (spec.flip, spec.rotate, spec.scale_min) == (t["flip"], t["rotate"], t["scale_min"])
        assert [list(m) for m in spec.means] == cfg["data_mean"]
        assert [list(s) for s in spec.stds] == cfg["data_std"]


def _labels(counts, seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=2, max_size=8), st.integers(0, 2**31 - 1), st.sampled_from([0.8, 0.9]))
def test_train_val_disjoint_stratified_deterministic(counts, seed, fraction):
    labels = _labels(counts)
    known = list(range(0, len(counts), 2))
    train, val = trainval.train_val_split(labels, known, fraction, seed)
    assert not np.intersect1d(train, val).size
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    for c in range(len(counts)):
        n_train, n_val = np.sum(labels[train] == c), np.sum(labels[val] == c)
        if c in known:
            assert n_train == int(np.floor(fraction * counts[c] + 1e-9)) and n_train + n_val == counts[c]
        else:
            assert n_train == n_val == 0
    again = trainval.train_val_split(labels, known, fraction, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_class_partition_independent_of_other_known_classes():
    labels = _labels([30, 30, 30, 30])
    a = trainval.train_val_split(labels, [0, 1], 0.8, 3)[1]
    b = trainval.train_val_split(labels, [0, 2, 3], 0.8, 3)[1]
    assert np.array_equal(a[labels[a] == 0], b[labels[b] == 0])


def test_train_val_split_is_stable_across_runs_and_versions():
    # Golden value: changes only if the documented algorithm changes.
    labels = np.arange(100) % 5
    train, val = trainval.train_val_split(labels, [0, 2, 4], 0.8, seed=0)
    assert (len(train), len(val)) == (48, 12)
    assert val.tolist() == [4, 25, 39, 45, 57, 60, 67, 77, 79, 80, 82, 94]


def test_trainval_file(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    path = tmp_path / "trainval_idxs.json"
    path.write_text(json.dumps({"Train": {"0": [0, 3, 6], "2": [2, 5], "1": [1]}, "Val": {"0": [9], "2": [8], "1": [4]}}))
    train, val = trainval.read_trainval_file(path, [0, 2], labels=labels)
    assert train.tolist() == [0, 2, 3, 5, 6] and val.tolist() == [8, 9]
    with pytest.raises(ValueError, match="not in the original"):
        trainval.read_trainval_file(path, [0, 2], labels=labels[::-1])
    with pytest.raises(ValueError, match=r"no 'Train' list for known classes \[3\]"):
        trainval.read_trainval_file(path, [0, 3])
    with pytest.raises(FileNotFoundError, match="trainval_idxs.json"):
        trainval.read_trainval_file(tmp_path / "missing.json", [0])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        trainval.read_trainval_file(tmp_path / "bad.json", [0])
    (tmp_path / "keys.json").write_text("{}")
    with pytest.raises(ValueError, match="'Train' and 'Val'"):
        trainval.read_trainval_file(tmp_path / "keys.json", [0])


@pytest.mark.skipif(not (REFERENCE / "CIFAR10" / "trainval_idxs.json").is_file(), reason="reference trainval files not available")
def test_reference_trainval_files_have_the_documented_sizes():
    for name, fraction, per_class in (("CIFAR10", 0.8, 5000), ("TinyImageNet", 0.9, 500)):
        path = REFERENCE / name / "trainval_idxs.json"
        table = json.loads(path.read_text())
        known = sorted(int(c) for c in table["Train"])
        train, val = trainval.read_trainval_file(path, known)
        assert len(train) == int(fraction * per_class) * len(known)
        assert len(train) + len(val) == per_class * len(known)
