"""Weight files never run pickled code: a file whose pickle would execute
something is refused by every loader, and nothing runs. (sha256 checks:
tests/test_fid.py and tests/models/test_resnet.py; the FID .pth case is here.)"""

import pickle

import ml_collections
import numpy as np
import pytest

from jaxcolor.core import configuration
from jaxcolor.evaluation import fid
from jaxcolor.models import torchvision_import
from jaxcolor.training import backbone


class _Payload:
  """Unpickling this runs code: it creates the file `marker`."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture
def marker(tmp_path):
  path = tmp_path / "payload_ran"
  pickle.loads(pickle.dumps(_Payload(path)))  # The payload does run when
  assert path.exists()                        # unpickled unsafely...
  path.unlink()
  yield path
  assert not path.exists()                    # ...and never in a loader.


def _loaders(path: str):
  """Every way a weight file is read, each expected to refuse `path`."""
  torchvision = lambda: torchvision_import.load_state_dict(path)
  fid_weights = lambda: fid.load_weights(path, expected_sha256=None)
  resnet = lambda: backbone.load_resnet18(ml_collections.ConfigDict(
      {"source": "torchvision", "path": path}))
  return [(torchvision, ValueError), (fid_weights, fid.FIDWeightsError),
          (resnet, configuration.ConfigError)]


def test_npz_with_pickled_objects_is_refused(tmp_path, marker):
  path = tmp_path / "weights.npz"
  np.savez(path, **{"conv1.weight": np.zeros((2, 2), np.float32),
                    "payload": np.array([_Payload(marker)], dtype=object)})
  for load, error in _loaders(str(path)):
    with pytest.raises(error, match="pickled objects"):
      load()
  # A bare pickle named .npz too.
  path.write_bytes(pickle.dumps({"conv1.weight": _Payload(marker)}))
  for load, error in _loaders(str(path)):
    with pytest.raises(error, match=str(path)):
      load()


def test_pth_with_pickled_code_is_refused(tmp_path, marker):
  torch = pytest.importorskip("torch")
  path = tmp_path / "weights.pth"
  torch.save({"conv1.weight": torch.zeros(2), "payload": _Payload(marker)},
             path)
  for load, error in _loaders(str(path)):
    with pytest.raises(error, match="never unpickled"):
      load()


def test_fid_pth_is_hashed_before_it_is_parsed(tmp_path):
  path = tmp_path / "pt_inception.pth"
  path.write_bytes(b"a pickle would be here")
  digest = torchvision_import.sha256_of(str(path))
  with pytest.raises(fid.FIDWeightsError) as error:
    fid.load_weights(str(path))
  message = str(error.value)
  assert str(path) in message and digest in message
  assert fid.WEIGHTS_SHA256 in message
