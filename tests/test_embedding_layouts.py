"""Embedding files from other tools: the Automatic1111 layouts (.pt with string_to_param, .safetensors with
emb_params), one vector or a refusal in one sentence, never pickled code run."""
import pytest
import torch
from safetensors.torch import save_file

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import load_relation, read_embedding_file


def a1111_pt(path, param) -> None:
    """What Automatic1111's textual-inversion training saves (its ``Embedding.save``)."""
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": path.stem, "step": 1200,
                "sd_checkpoint": "a1b2c3d4", "sd_checkpoint_name": "v1-5-pruned-emaonly"}, path)


@pytest.mark.parametrize("shape", [(1, 32), (32,)])
def test_automatic1111_pt_with_one_vector_reads_as_that_vector_under_the_file_name(tmp_path, shape):
    vector = torch.randn(*shape, requires_grad=True)
    a1111_pt(tmp_path / "under.pt", vector)
    token, read = read_embedding_file(tmp_path / "under.pt")
    assert token == "<under>" and read.shape == (32,) and torch.equal(read, vector.detach().reshape(32))


def test_automatic1111_safetensors_with_emb_params_reads_as_its_vector(tmp_path):
    vector = torch.randn(1, 32)
    save_file({"emb_params": vector}, str(tmp_path / "beside.safetensors"))
    relation = load_relation(tmp_path / "beside.safetensors")
    assert relation.token == "<beside>" and torch.equal(relation.vector, vector[0])


def test_a_given_token_replaces_the_file_name(tmp_path):
    a1111_pt(tmp_path / "x.pt", torch.randn(1, 32))
    assert read_embedding_file(tmp_path / "x.pt", token="<R>")[0] == "<R>"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_multi_vector_automatic1111_embedding_is_refused_with_its_shape(tmp_path, suffix):
    path = tmp_path / f"wide{suffix}"
    if suffix == ".pt":
        a1111_pt(path, torch.randn(4, 32))
    else:
        save_file({"emb_params": torch.randn(4, 32)}, str(path))
    with pytest.raises(ReVersionError, match=rf"^wide{suffix} holds a tensor of shape \(4, 32\); a relation prompt is one vector\.$"):
        read_embedding_file(path)


def test_an_automatic1111_pt_holding_a_module_is_refused_without_running_it(tmp_path):
    torch.save({"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.randn(1, 32))}), "name": "old"},
               tmp_path / "old.pt")
    with pytest.raises(ReVersionError, match=r"^old.pt contains pickled code, which is never executed"):
        read_embedding_file(tmp_path / "old.pt")
