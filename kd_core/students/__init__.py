"""Student encoders (pure torch)."""
from .encoder import ChunkedEncoder, StreamState
from .frontends import FbankConv2d, SampleBuffer, WaveformCNN
from .model import StreamingStudent, StudentOutput, stream_hidden, stream_steps, streaming_student, student_small, student_tiny

__all__ = ["ChunkedEncoder", "StreamState", "FbankConv2d", "SampleBuffer", "WaveformCNN", "StreamingStudent",
           "StudentOutput", "stream_hidden", "stream_steps", "streaming_student", "student_small", "student_tiny"]
