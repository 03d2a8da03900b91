"""The official SAVi checkpoint (clu `ckpt-1.flax`, a TrainState) and `params.msgpack` read
without JAX/Flax/TF, `slotlab convert-savi` end to end, and damaged files as one error line."""

import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

import slotlab
from slotlab.cli import main
from slotlab.errors import CheckpointError
from slotlab.tf_formats.flax_msgpack import (
    checkpoint_file,
    flax_params,
    read_flax_msgpack,
)
from slotlab.tf_formats.official_savi import (
    infer_savi_config,
    load_savi_checkpoint,
    read_savi_params,
    savi_state_dict,
    state_dict_to_flax,
)

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "official_savi"


def reference(*parts: str) -> Path:
    path = ROOT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"official SAVi reference not found: {path}")
    return path


@pytest.fixture(scope="module")
def fixture():
    with np.load(reference("fixture.npz")) as data:
        return {k: data[k] for k in data.files}


def images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).movedim(-1, -3)


def check_outputs(model, fx):
    with torch.no_grad():
        out = model(images(fx["in__video"]), boxes=torch.from_numpy(fx["in__boxes"]))
    errors = {
        "states": (out.slots - torch.from_numpy(fx["out__states"])).abs().max(),
        "states_pred": (out.predicted_slots - torch.from_numpy(fx["out__states_pred"])).abs().max(),
        "attn": (out.attention - torch.from_numpy(fx["out__attn"])).abs().max(),
        "alphas": (out.masks - images(fx["out__alphas"])).abs().max(),
        "flow": (out.target - images(fx["out__flow"])).abs().max(),
    }
    assert max(float(v) for v in errors.values()) < 1e-4, errors
    return out


def test_checkpoint_holds_the_fixture_params(fixture):
    tree = read_flax_msgpack(reference("ckpt_workdir", "checkpoints-0", "ckpt-1.flax"))
    assert sorted(tree) == ["optimizer", "rng", "step", "variables"] and tree["step"] == 1
    assert tree["rng"].dtype == np.uint32 and tree["rng"].shape == (2,)
    from_ckpt = flax_params(tree)
    from_params = flax_params(read_flax_msgpack(reference("params.msgpack")))
    official = {k: v for k, v in fixture.items() if "__" not in k
                and k not in ("loss", "grad_global_norm", "grad_clip_coef")}
    assert set(from_ckpt) == set(from_params) == set(official)
    for name, value in official.items():
        assert from_ckpt[name].dtype == value.dtype and np.array_equal(from_ckpt[name], value)
        assert np.array_equal(from_params[name], value)


@pytest.mark.parametrize("where", ["dir", "workdir", "ckpt", "params"])
def test_converted_checkpoint_gives_official_outputs(where, fixture):
    path = {
        "dir": reference("ckpt_workdir", "checkpoints-0"),
        "workdir": reference("ckpt_workdir"),
        "ckpt": reference("ckpt_workdir", "checkpoints-0", "ckpt-1.flax"),
        "params": reference("params.msgpack"),
    }[where]
    model = load_savi_checkpoint(path, num_slots=11)
    c = model.config
    assert (c.resolution, c.initializer, c.num_slots) == ((32, 32), "boxes", 11)
    assert not model.training
    check_outputs(model, fixture)


def test_mapping_round_trips(fixture):
    _, params = read_savi_params(reference("params.msgpack"))
    model = load_savi_checkpoint(reference("params.msgpack"))
    back = state_dict_to_flax(model.state_dict(), model.config)
    assert set(back) == set(params)
    for name, value in params.items():
        assert back[name].shape == value.shape and np.array_equal(back[name], value), name


def test_cli_end_to_end(tmp_path, capsys, fixture):
    src = reference("ckpt_workdir", "checkpoints-0")
    assert main(["convert-savi", str(src), "--out", str(tmp_path / "m"), "--num-slots",
                 "11"]) == 0
    printed = capsys.readouterr().out
    assert "ckpt-1.flax" in printed and "boxes" in printed
    model = slotlab.load_pretrained(tmp_path / "m")
    assert model.config.num_slots == 11
    check_outputs(model, fixture)


def test_newest_checkpoint_is_taken(tmp_path):
    src = reference("ckpt_workdir", "checkpoints-0", "ckpt-1.flax")
    for n in (1, 3, 12):
        shutil.copy(src, tmp_path / f"ckpt-{n}.flax")
    assert checkpoint_file(tmp_path).name == "ckpt-12.flax"
    with pytest.raises(CheckpointError, match="no ckpt-N.flax"):
        checkpoint_file(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    return path


def one_error_line(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def damaged(kind: str, src: bytes) -> bytes:
    data = bytearray(src)
    if kind == "truncated":
        return bytes(data[: len(data) // 2])
    if kind == "random":
        return np.random.default_rng(0).bytes(4096)
    if kind == "empty":
        return b""
    if kind == "dtype":
        i = data.find(b"float32")
        data[i:i + 7] = b"object7"
    elif kind == "size":
        i = data.find(b"float32")
        data[i:i + 7] = b"float64"
    elif kind == "renamed":
        i = data.find(b"Readout_0")
        data[i:i + 9] = b"Readout_9"
    elif kind == "list":
        return msgpack.packb([1, 2, 3])
    elif kind == "not_params":
        return msgpack.packb({"step": 1, "optimizer": {"target": {"Dense_0": {"kernel": 1}}}})
    return bytes(data)


@pytest.mark.parametrize("kind, fragment", [
    ("truncated", "not a valid Flax msgpack file"),
    ("random", "not a valid Flax msgpack file"),
    ("empty", "not a valid Flax msgpack file"),
    ("dtype", "unsupported dtype"),
    ("size", "holds 1024 bytes"),
    ("renamed", "Readout_0"),
    ("list", "not a Flax state"),
    ("not_params", "is not an array"),
])
def test_damaged_file_is_one_error_line(kind, fragment, tmp_path, capsys):
    path = tmp_path / "params.msgpack"
    path.write_bytes(damaged(kind, reference("params.msgpack").read_bytes()))
    with pytest.raises(CheckpointError):
        load_savi_checkpoint(path)
    one_error_line(["convert-savi", str(path), "--out", str(tmp_path / "out")], capsys,
                   "params.msgpack", fragment)
    assert not (tmp_path / "out").exists()


def test_wrong_files_are_one_error_line(tmp_path, capsys):
    one_error_line(["convert-savi", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                   capsys, "does not exist")
    one_error_line(["convert-savi", str(_empty(tmp_path)), "--out", str(tmp_path / "o")],
                   capsys, "no ckpt-N.flax")
    other = tmp_path / "other.msgpack"  # a msgpack of some other flax model
    other.write_bytes(_flax_bytes({"Dense_0": {"kernel": np.ones((2, 3), np.float32)}}))
    one_error_line(["convert-savi", str(other), "--out", str(tmp_path / "o")], capsys,
                   "holds no SAVi parameters", "Dense_0")


def test_shape_mismatch_is_one_error_line(tmp_path, capsys):
    tree = read_flax_msgpack(reference("params.msgpack"))
    tree["SlotAttention_0"]["LayerNorm_1"]["scale"] = np.ones(7, np.float32)
    path = tmp_path / "bad.msgpack"
    path.write_bytes(_flax_bytes(tree))
    one_error_line(["convert-savi", str(path), "--out", str(tmp_path / "o")], capsys,
                   "LayerNorm_1/scale", "(7,)")


def _flax_bytes(tree) -> bytes:
    """What flax.serialization.to_bytes writes (arrays as extension type 1)."""
    def default(x):
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb([list(x.shape), x.dtype.name, x.tobytes()],
                                                    use_bin_type=True))
        raise TypeError(type(x))
    return msgpack.packb(tree, default=default, use_bin_type=True)


def test_reader_scalars_and_chunked_arrays(tmp_path):
    flat = np.arange(10, dtype=np.float32)
    scalar = msgpack.ExtType(3, msgpack.packb([[], "int32", np.int32(7).tobytes()],
                                              use_bin_type=True))
    tree = {
        "step": scalar,
        "z": msgpack.ExtType(2, msgpack.packb([1.5, -2.0])),
        "big": {"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 5},
                "chunks": {"0": flat[:6], "1": flat[6:]}},
    }
    path = tmp_path / "state.msgpack"
    path.write_bytes(_flax_bytes(tree))
    out = read_flax_msgpack(path)
    assert out["step"] == 7 and out["z"] == complex(1.5, -2.0)
    assert np.array_equal(out["big"], flat.reshape(2, 5))


def test_infer_points_and_learned(fixture):
    _, params = read_savi_params(reference("params.msgpack"))
    points = dict(params)
    kernel = points["CoordinateEncoderStateInit_0/MLP_0/dense_mlp_0/kernel"]
    points["CoordinateEncoderStateInit_0/MLP_0/dense_mlp_0/kernel"] = kernel[:2]
    assert infer_savi_config(points).initializer == "points"
    learned = {k: v for k, v in params.items() if not k.startswith("CoordinateEncoder")}
    learned["ParamStateInit_0/state_init"] = np.zeros((5, 128), np.float32)
    config = infer_savi_config(learned)
    assert (config.initializer, config.num_slots) == ("learned", 5)
    with pytest.raises(CheckpointError, match="5 learned initial slots"):
        infer_savi_config(learned, num_slots=6)
    model = slotlab.models.SAVi(config)
    model.load_state_dict(savi_state_dict(learned, model))
