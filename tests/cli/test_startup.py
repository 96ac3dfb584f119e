"""Start-up: bad input fails before TensorFlow loads; TensorFlow's C++ lines stay off stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

TF_NOISE = ("cudart_stub", "cuInit", "E0000", "I0000", "absl::InitializeLog")


def geoseg_cli(*args, env=None):
    """Run ``geoseg ARGS`` in a fresh interpreter; return the completed process."""
    code = "import sys; from geoseg.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize(
    "args",
    [
        ["train", "{tmp}/no-chips", "--out", "{tmp}/model"],
        ["predict", "{tmp}/none.tif", "--model", "{tmp}", "--out", "{tmp}/p.tif"],
    ],
)
def test_bad_input_fails_before_tensorflow_loads(args, tmp_path):
    code = (
        "import sys\nfrom geoseg.cli import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept Exception as exc:\n"
        "    print(type(exc).__name__)\nprint('tensorflow' in sys.modules)\n"
    )
    args = [a.format(tmp=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.stdout.split() == ["ClickException", "False"], done.stdout + done.stderr


def test_tensorflow_start_up_lines_only_with_verbose(tiny_model, tiny_chips, tmp_path):
    image = tiny_chips.parent / "scene" / "image.tif"
    quiet = geoseg_cli("predict", image, "-m", tiny_model, "-o", tmp_path / "a.tif",
                       "--block-size", "512")  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert not [word for word in TF_NOISE if word in quiet.stderr], quiet.stderr
    assert "probabilities:" in quiet.stdout
    verbose = geoseg_cli("-v", "predict", image, "-m", tiny_model, "-o", tmp_path / "b.tif",
                         "--block-size", "512")  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    assert "blocks of 512 px" in verbose.stderr  # the library's steps
    assert "oneDNN" in verbose.stderr or "cuda" in verbose.stderr.lower()  # TensorFlow's own
