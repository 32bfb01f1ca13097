"""SEW squeezed students (``squeeze=s``): the stack runs on 1/s of the frames, the output comes back at the input frame
rate; chunk-by-chunk streaming equals the masked full forward; padding does not leak; latency is the unsqueezed one."""
import pytest
import torch
from float_noise import assert_float_noise_close
from test_streaming import _pieces

from kd_core.errors import KDConfigError
from kd_core.streaming import lengths_to_mask
from kd_core.students import student_tiny


@pytest.mark.parametrize("s,chunk,right", [(2, 4, 0), (2, 6, 2), (3, 6, 3)])
@pytest.mark.parametrize("samples", [21_111, 20_480])  # an odd and an even number of front-end frames
def test_squeezed_streaming_equals_masked_full_forward(s, chunk, right, samples):
    torch.manual_seed(0)
    model = student_tiny(chunk_size=chunk, right_context=right, squeeze=s, vocab_size=11).eval()
    plain = student_tiny(chunk_size=chunk, right_context=right, vocab_size=11).eval()
    wav = torch.randn(1, samples)
    full = model(wav, torch.tensor([samples]))
    assert full.lengths.tolist() == plain(wav, torch.tensor([samples])).lengths.tolist()  # same output frame count
    assert all(h.size(1) == int(full.lengths) for h in full.hidden)
    streamed = model.stream(_pieces(wav, seed=2))
    for k, (a, b) in enumerate(zip(full.hidden + [full.logits], streamed.hidden + [streamed.logits])):
        assert b.shape == a.shape, k
        assert_float_noise_close(b, a, width=128, depth=16, what=f"output {k}")
    assert model.frame_shift_ms == plain.frame_shift_ms  # latency helpers read the same figures: chunk + look-ahead


def test_the_stack_runs_on_squeezed_frames():
    """A frame's output depends on its whole squeeze group (pooled) and, through the learnt upsampling, differs
    within a group; layers below the last repeat each squeezed frame s times."""
    torch.manual_seed(0)
    model = student_tiny(chunk_size=4, squeeze=2, vocab_size=5).eval()
    out = model(torch.randn(1, 16000), torch.tensor([16000]))
    mid = out.hidden[1][0]
    assert torch.equal(mid[0::2][: mid[1::2].size(0)], mid[1::2])  # repeated pairs
    last = out.hidden[-1][0]
    assert (last[0] - last[1]).abs().max() > 1e-4  # upsampled, not repeated
    calls = []
    handle = model.encoder.layers[0].register_forward_hook(lambda m, a, o: calls.append(a[0].size(1)))
    model(torch.randn(1, 16000), torch.tensor([16000]))
    handle.remove()
    assert calls == [(int(out.lengths) + 1) // 2]


def test_squeezed_student_is_padding_invariant():
    torch.manual_seed(0)
    model = student_tiny(chunk_size=4, squeeze=2, vocab_size=7).eval()
    a, b = torch.randn(10900), torch.randn(14000)
    batch = torch.zeros(2, 14000)
    batch[0, :10900], batch[1] = a, b
    out = model(batch, torch.tensor([10900, 14000]))
    alone = model(a[None], torch.tensor([10900]))
    n = int(out.lengths[0])
    assert n == alone.hidden[-1].size(1) and n % 2 == 1  # an odd frame count: the last group is half padding
    torch.testing.assert_close(out.hidden[-1][0, :n], alone.hidden[-1][0], atol=1e-5, rtol=0)
    assert not out.hidden[-1][0, n:].any() and bool(lengths_to_mask(out.lengths, out.hidden[-1].size(1)).any())


def test_chunks_must_be_whole_squeeze_groups():
    with pytest.raises(KDConfigError, match="multiples of squeeze=2"):
        student_tiny(chunk_size=3, squeeze=2)
    with pytest.raises(KDConfigError, match="squeeze=0"):
        student_tiny(chunk_size=4, squeeze=0)
