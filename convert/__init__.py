"""convert: move neural-network weights between TensorFlow, Keras, PyTorch and Flax."""

from .api import Report, convert, load, save
from .errors import ConvertError
from .graph import Entry, Graph, Node, Slot
from .tensor import Tensor

__all__ = ["ConvertError", "Entry", "Graph", "Node", "Report", "Slot", "Tensor", "convert",
           "load", "save"]
__version__ = "0.1.0"
