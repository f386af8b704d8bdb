"""Opening checkpoint files, rebuilding architectures, and load_graph end to end."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from neuronmap.examples import nets
from neuronmap.loaders import (
    ArchitectureError,
    CheckpointError,
    LoadError,
    build_module,
    file_sha256,
    graph_from_module,
    load_exported,
    load_graph,
    load_state_dict,
    load_state_dict_into,
)

DIGITS = "neuronmap.examples.nets:digits_mlp"


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture
def digits_state(tmp_path):
    torch.manual_seed(0)
    net = nets.digits_mlp()
    path = tmp_path / "digits.pt"
    torch.save(net.state_dict(), path)
    return net, path


# -- opening files -------------------------------------------------------------------------------------------------


def test_pickled_module_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(TinyNet(), path)
    with pytest.raises(
        CheckpointError,
        match=r"'net\.pt' holds a pickled TinyNet object, which weights_only=True "
        r"refuses to load\. Save model\.state_dict\(\) instead and pass --arch",
    ):
        load_state_dict(path)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(2000), b"just some text\n", b""])
def test_a_file_that_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"'junk\.pt' is not a PyTorch checkpoint") as info:
        load_state_dict(path)
    assert isinstance(info.value, (LoadError, ValueError))


def test_a_dict_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"fc.weight": torch.ones(2, 2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"entry 'epoch' holds an int, not a tensor"):
        load_state_dict(path)


def test_a_list_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_state_dict(path)


def test_a_training_checkpoint_with_a_state_dict_entry(tmp_path):
    path = tmp_path / "train.pth"
    weights = TinyNet().state_dict()
    torch.save({"epoch": 3, "state_dict": weights, "optimizer": {"lr": 0.1}}, path)
    loaded = load_state_dict(path)
    assert loaded.keys() == weights.keys()
    torch.testing.assert_close(loaded["fc.weight"], weights["fc.weight"])


def test_safetensors_round_trip_and_bad_file(tmp_path):
    weights = TinyNet().state_dict()
    good = tmp_path / "w.safetensors"
    save_file(weights, good)
    torch.testing.assert_close(load_state_dict(good)["fc.bias"], weights["fc.bias"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match=r"'bad\.safetensors' is not a safetensors file"):
        load_state_dict(bad)


def test_bad_pt2_file(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"'model\.pt2' is not a torch.export program"):
        load_exported(path)
    torch.save(TinyNet().state_dict(), path)  # a zip archive, but torch.save's
    with pytest.raises(
        CheckpointError,
        match=r"'model\.pt2' could not be read as a torch.export program "
        r"\(RuntimeError: .*archive_format",
    ):
        load_exported(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    path = tmp_path / "model.h5"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"'\.h5' is not one of \.pt, \.pth, \.safetensors, \.pt2"):
        load_graph(path, arch=DIGITS)


def test_file_sha256(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"neuronmap" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"neuronmap" * 1000).hexdigest()


# -- architectures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("neuronmap.examples.nets", "not of the form 'package.module:factory'"),
        ("no_such_package.nets:mlp", "no importable module 'no_such_package.nets'"),
        ("neuronmap.examples.nets:digits_mpl", "has no attribute 'digits_mpl'.*Did you mean digits_mlp"),
        ("math:pi", "names a float, not a function"),
        ("neuronmap.examples.nets:glorot_init", "with no arguments failed"),
        ("builtins:dict", "returned a dict, not an nn.Module"),
    ],
)
def test_bad_architecture_specs(spec, pattern):
    with pytest.raises(ArchitectureError, match=pattern):
        build_module(spec)


def test_examples_shorthand_resolves_under_neuronmap():
    assert isinstance(build_module("examples.nets:digits_mlp"), nn.Sequential)


def test_state_dict_that_does_not_fit(digits_state):
    net, _ = digits_state
    state = dict(net.state_dict())
    state["2.weight"] = torch.zeros(64, 32)
    del state["4.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ArchitectureError,
        match=r"missing keys: 4\.bias; unexpected keys: extra\.weight; shape "
        r"mismatches \(checkpoint vs module\): 2\.weight \(64, 32\) vs "
        r"\(64, 64\)",
    ):
        load_state_dict_into(nets.digits_mlp(), state)


# -- load_graph ----------------------------------------------------------------------------------------------------


def test_load_graph_from_a_state_dict(digits_state):
    net, path = digits_state
    graph = load_graph(path, arch=DIGITS)
    np.testing.assert_array_equal(graph.blocks[0].weight, net[0].weight.detach().double().numpy().T)
    assert graph.meta.arch == DIGITS and graph.meta.source == str(path)
    assert graph.meta.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_source_is_recorded_absolute(digits_state, monkeypatch):
    _, path = digits_state
    monkeypatch.chdir(path.parent)  # ingested as a relative path, assessed later from anywhere
    graph = load_graph(path.name, arch=DIGITS)
    assert graph.meta.source == str(path.resolve())


def test_load_graph_from_safetensors_and_pt2_agree(tmp_path):
    torch.manual_seed(1)
    net = nets.digits_cnn().eval()
    st = tmp_path / "cnn.safetensors"
    save_file(net.state_dict(), st)
    pt2 = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), pt2)
    a = load_graph(st, arch="neuronmap.examples.nets:digits_cnn", kernel_norm="fro")
    b = load_graph(pt2, kernel_norm="fro")
    assert b.meta.arch == "torch.export" and b.meta.kernel_norm == "fro"
    assert [layer.model_dump() for layer in a.layers] == [layer.model_dump() for layer in b.layers]
    for x, y in zip(a.blocks, b.blocks, strict=True):
        np.testing.assert_allclose(x.weight, y.weight, rtol=1e-12)
    np.testing.assert_allclose(a.blocks[1].weight, graph_from_module(net, kernel_norm="fro").blocks[1].weight)


def test_load_graph_needs_arch_for_weights_and_none_for_pt2(digits_state, tmp_path):
    _, path = digits_state
    with pytest.raises(ArchitectureError, match="holds only weights; pass --arch"):
        load_graph(path)
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(TinyNet(), (torch.zeros(2, 2),)), pt2)
    with pytest.raises(ArchitectureError, match="carries its own graph; drop --arch"):
        load_graph(pt2, arch=DIGITS)


def test_load_graph_with_the_wrong_arch(digits_state):
    _, path = digits_state
    with pytest.raises(ArchitectureError, match="does not fit neuronmap.examples.nets:mlp_4x256"):
        load_graph(path, arch="neuronmap.examples.nets:mlp_4x256")
