"""Adapters from real datasets on disk (image folder + CSV, CelebA, HDF5) to PreparedArrays."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from diffxai.data import adapters
from diffxai.data.prepare import build_dataset
from diffxai.data.prepared import SPLITS, PreparedData, write_prepared

RED, GREEN, BLUE, YELLOW, GREY = (220, 30, 30), (30, 200, 40), (20, 40, 230), (230, 220, 20), (128, 128, 128)


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 24)) -> Path:
    """A constant-colour image file (format from the suffix); size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


def mean_colour(image: np.ndarray) -> np.ndarray:
    """Mean per channel of one (C, H, W) image."""
    return image.reshape(image.shape[0], -1).mean(axis=1)


def folder_params(root: Path, csv: str = "labels.csv", **extra) -> dict:
    params = {
        "root": str(root),
        "csv": csv,
        "filename_column": "filename",
        "label_column": "label",
        "split_column": None,
        "attribute_columns": [],
        "crop": "center",
    }
    return {**params, **extra}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """images/ with four coloured images (PNG and JPEG, square and not) and images/labels.csv."""
    root = tmp_path / "images"
    write_image(root / "a.png", RED)
    write_image(root / "b.jpg", GREEN, (40, 20))
    write_image(root / "sub" / "c.png", BLUE, (10, 30))
    write_image(root / "d.png", YELLOW)
    (root / "labels.csv").write_text(
        "filename,label,split,smiling,glasses,hat\n"
        "a.png,dog,train,1,true,0\n"
        "b.jpg,cat,val,-1,False,1\n"
        "sub/c.png,dog,test,1,TRUE,1\n"
        "d.png,bird,0,-1,false,0\n"
    )
    return root


def test_image_folder_images_labels_splits_attributes(folder: Path) -> None:
    params = folder_params(folder, split_column="split", attribute_columns=["smiling", "glasses", "hat"])
    data = adapters.load_image_folder(params, 16, 3, folder)
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == np.uint8
    for image, colour, tol in zip(data.images, [RED, GREEN, BLUE, YELLOW], [1, 4, 1, 1], strict=True):
        np.testing.assert_allclose(mean_colour(image), colour, atol=tol)
    assert data.class_names == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(data.labels, [2, 1, 2, 0])
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(
        data.split, [SPLITS["train"], SPLITS["val"], SPLITS["test"], SPLITS["train"]]
    )
    assert data.attribute_names == ["smiling", "glasses", "hat"]
    np.testing.assert_array_equal(data.attributes, [[1, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]])
    assert data.attributes.dtype == np.uint8
    assert data.meta["source"] == "image_folder" and data.meta["csv"] == str(folder / "labels.csv")


def test_image_folder_without_split_or_attributes(folder: Path) -> None:
    data = adapters.load_image_folder(folder_params(folder), 8, 3, folder)
    assert data.split is None and data.attributes is None and data.attribute_names == []


def test_image_folder_grayscale(folder: Path) -> None:
    data = adapters.load_image_folder(folder_params(folder), 12, 1, folder)
    assert data.images.shape == (4, 1, 12, 12)
    expected = Image.new("RGB", (1, 1), RED).convert("L").getpixel((0, 0))
    np.testing.assert_allclose(mean_colour(data.images[0]), [expected], atol=1)


def test_center_crop_keeps_centre(tmp_path: Path) -> None:
    """A 60x20 image red | green | blue: the centre crop is all green, no crop squeezes all three in."""
    stripes = np.zeros((20, 60, 3), dtype=np.uint8)
    stripes[:, :20], stripes[:, 20:40], stripes[:, 40:] = RED, GREEN, BLUE
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    (tmp_path / "list.csv").write_text("filename,label\nwide.png,x\n")
    params = folder_params(tmp_path, csv=str(tmp_path / "list.csv"))
    centre = adapters.load_image_folder(params, 10, 3, Path("/nonexistent")).images[0]
    np.testing.assert_allclose(mean_colour(centre), GREEN, atol=1)
    squeezed = adapters.load_image_folder({**params, "crop": "none"}, 30, 3, Path("/nonexistent")).images[0]
    assert squeezed.shape == (3, 30, 30)
    np.testing.assert_allclose(squeezed[:, 15, 5], RED, atol=1)
    np.testing.assert_allclose(squeezed[:, 15, 15], GREEN, atol=1)
    np.testing.assert_allclose(squeezed[:, 15, 25], BLUE, atol=1)


def test_image_folder_paths_relative_and_absolute(tmp_path: Path) -> None:
    elsewhere = write_image(tmp_path / "elsewhere" / "x.png", GREY)
    write_image(tmp_path / "data" / "imgs" / "y.png", BLUE)
    write_image(tmp_path / "data" / "imgs" / "z.png", RED)
    (tmp_path / "data" / "list.csv").write_text(
        f"filename,label\n{elsewhere},2\nimgs/y.png,10\nimgs/z.png,2\n"
    )
    params = folder_params(Path("data"), csv="data/list.csv")
    data = adapters.load_image_folder(params, 8, 3, tmp_path)
    np.testing.assert_allclose(mean_colour(data.images[0]), GREY, atol=1)
    np.testing.assert_allclose(mean_colour(data.images[1]), BLUE, atol=1)
    assert data.class_names == ["2", "10"]  # numeric labels sort numerically
    np.testing.assert_array_equal(data.labels, [0, 1, 0])


def test_image_folder_missing_column(folder: Path) -> None:
    with pytest.raises(KeyError, match=r"'species'.*columns: \['filename', 'label'"):
        adapters.load_image_folder(folder_params(folder, label_column="species"), 8, 3, folder)
    with pytest.raises(KeyError, match="'beard'"):
        adapters.load_image_folder(folder_params(folder, attribute_columns=["beard"]), 8, 3, folder)


def test_image_folder_missing_file(folder: Path) -> None:
    (folder / "d.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"d\.png.*row 4 of .*labels\.csv"):
        adapters.load_image_folder(folder_params(folder), 8, 3, folder)


def test_sixteen_bit_and_float_greyscale_keep_their_range(tmp_path: Path) -> None:
    """A 16-bit PNG ramp 0..65535 (a scan) loads as the ramp 0..255, not clipped white; a
    float TIFF in [0, 1] as its values x 255; a float image beyond [0, 1] is refused."""
    ramp = np.tile(np.linspace(0, 65535, 16), (16, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "scan.png")
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(tmp_path / "unit.tif")
    Image.fromarray((ramp / 100.0).astype(np.float32)).save(tmp_path / "wide.tif")
    (tmp_path / "list.csv").write_text("filename,label\nscan.png,a\nunit.tif,b\n")
    params = folder_params(tmp_path, csv="list.csv", crop="none")
    images = adapters.load_image_folder(params, 16, 1, tmp_path).images
    for image in images:
        np.testing.assert_allclose(image[0], np.round(ramp / 257.0), atol=1)
    (tmp_path / "list.csv").write_text("filename,label\nscan.png,a\nwide.tif,b\n")
    with pytest.raises(ValueError, match=r"wide\.tif.*row 2 of .*list\.csv.*mode F.*allowed: \[0, 1\]"):
        adapters.load_image_folder(params, 16, 1, tmp_path)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A photo stored sideways (red left half, blue right) with EXIF orientation 6 (rotate 90°
    clockwise to view) loads upright: red on top."""
    sideways = np.zeros((16, 16, 3), dtype=np.uint8)
    sideways[:, :8], sideways[:, 8:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(sideways).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    (tmp_path / "list.csv").write_text("filename,label\nphoto.jpg,a\n")
    image = adapters.load_image_folder(folder_params(tmp_path, csv="list.csv"), 16, 3, tmp_path).images[0]
    np.testing.assert_allclose(mean_colour(image[:, :6]), RED, atol=12)
    np.testing.assert_allclose(mean_colour(image[:, -6:]), BLUE, atol=12)


def test_an_unreadable_image_is_named_with_its_row(folder: Path) -> None:
    (folder / "d.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*d\.png \(listed in row 4 of .*labels\.csv\)"):
        adapters.load_image_folder(folder_params(folder), 8, 3, folder)


def test_image_folder_bad_split_and_attribute_values(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", RED)
    (tmp_path / "list.csv").write_text("filename,label,split,flag\na.png,x,training,2\n")
    params = folder_params(tmp_path, csv="list.csv")
    with pytest.raises(ValueError, match="'training'"):
        adapters.load_image_folder({**params, "split_column": "split"}, 8, 3, tmp_path)
    with pytest.raises(ValueError, match=r"'flag'.*'2'"):
        adapters.load_image_folder({**params, "attribute_columns": ["flag"]}, 8, 3, tmp_path)


def test_an_image_listed_twice_is_refused_naming_both_rows(folder: Path) -> None:
    with (folder / "labels.csv").open("a") as csv:
        csv.write("./sub//c.png,cat,train,1,true,0\n")
    with pytest.raises(ValueError, match=r"c\.png is listed twice: in row 3 of .*labels\.csv and in row 5"):
        adapters.load_image_folder(folder_params(folder), 8, 3, folder)


# --------------------------------------------------------------------------- CelebA

CELEBA_NAMES = ["Bald", "Smiling", "Male", "Young"]
CELEBA_ROWS = [  # filename, colour, attributes (-1/1), partition
    ("000001.jpg", RED, [-1, 1, 1, -1], 0),
    ("000002.jpg", GREEN, [1, -1, 1, 1], 0),
    ("000003.jpg", BLUE, [-1, 1, -1, 1], 1),
    ("000004.jpg", YELLOW, [-1, -1, -1, -1], 2),
    ("000005.jpg", GREY, [1, 1, 1, 1], 2),
]


@pytest.fixture
def celeba(tmp_path: Path) -> Path:
    """A fake CelebA folder: img_align_celeba/ (178x218 JPEGs), attribute and partition files."""
    base = tmp_path / "celeba"
    lines = [" 5", "Bald  Smiling Male   Young "]
    for name, colour, values, _ in CELEBA_ROWS:
        write_image(base / "img_align_celeba" / name, colour, (178, 218))
        lines.append(f"{name}  " + " ".join(f"{v:2d}" for v in values).replace(" 1", "  1"))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text("".join(f"{r[0]} {r[3]}\n" for r in CELEBA_ROWS))
    return base


def celeba_params(**extra) -> dict:
    params = {
        "root": "celeba/img_align_celeba",
        "attr_file": "list_attr_celeba.txt",
        "partition_file": "list_eval_partition.txt",
        "task": "Smiling",
        "max_images": None,
        "crop": "center",
    }
    return {**params, **extra}


def test_celeba_attributes_labels_splits(celeba: Path) -> None:
    data = adapters.load_celeba(celeba_params(), 16, 3, celeba.parent)
    assert data.images.shape == (5, 3, 16, 16)
    for image, row in zip(data.images, CELEBA_ROWS, strict=True):
        np.testing.assert_allclose(mean_colour(image), row[1], atol=4)
    assert data.attribute_names == CELEBA_NAMES
    np.testing.assert_array_equal(data.attributes, [(np.array(r[2]) == 1) for r in CELEBA_ROWS])
    assert data.attributes.dtype == np.uint8
    assert data.class_names == ["not_Smiling", "Smiling"]
    np.testing.assert_array_equal(data.labels, [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(data.split, [r[3] for r in CELEBA_ROWS])
    assert data.meta["source"] == "celeba" and data.meta["task"] == "Smiling"


def test_celeba_task_max_images_no_partition(celeba: Path) -> None:
    params = celeba_params(
        task="Young", max_images=3, partition_file=None, attr_file=str(celeba / "list_attr_celeba.txt")
    )
    data = adapters.load_celeba(params, 8, 1, celeba.parent)
    assert data.images.shape == (3, 1, 8, 8)
    assert data.class_names == ["not_Young", "Young"]
    np.testing.assert_array_equal(data.labels, [0, 1, 1])
    assert data.split is None and data.attributes.shape == (3, 4)


def test_celeba_unknown_task(celeba: Path) -> None:
    with pytest.raises(ValueError, match=r"'Blond_Hair'.*\['Bald', 'Smiling', 'Male', 'Young'\]"):
        adapters.load_celeba(celeba_params(task="Blond_Hair"), 8, 3, celeba.parent)


def test_celeba_missing_image(celeba: Path) -> None:
    (celeba / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"000003\.jpg.*line 5 of .*list_attr_celeba\.txt"):
        adapters.load_celeba(celeba_params(), 8, 3, celeba.parent)


def test_a_celeba_image_listed_twice_is_refused(celeba: Path) -> None:
    attr = celeba / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[0], lines[-1] = " 5", lines[2]  # the last row repeats the first image
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"000001\.jpg is listed twice: in line 3 of .* and in line 7"):
        adapters.load_celeba(celeba_params(partition_file=None), 8, 3, celeba.parent)


# --------------------------------------------------------------------------- HDF5


def hdf5_params(path: Path, **extra) -> dict:
    return {"path": str(path), "images": "images", "labels": "labels", "split": None, "factors": [], **extra}


def test_hdf5_nhwc_uint8_with_split_and_factors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    scale, angle = rng.random(6), rng.random(6).astype(np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"], f["y"], f["split"] = images, np.array([0, 3, 1, 1, 0, 2]), np.array([0, 0, 1, 2, 2, 0])
        f["factors/scale"], f["angle"] = scale.astype(np.float32), angle
    params = hdf5_params(Path("d.h5"), labels="y", split="split", factors=["factors/scale", "angle"])
    data = adapters.load_hdf5(params, 16, tmp_path)
    np.testing.assert_array_equal(data.images, images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data.labels, [0, 3, 1, 1, 0, 2])
    assert data.class_names == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(data.split, [0, 0, 1, 2, 2, 0])
    assert data.factor_names == ["factors/scale", "angle"] and data.factors.dtype == np.float32
    np.testing.assert_array_equal(data.factors, np.stack([scale.astype(np.float32), angle], axis=1))
    assert data.meta["source"] == "hdf5" and data.meta["layout"] == "NHWC"


def test_hdf5_nchw_float(tmp_path: Path) -> None:
    images = np.random.default_rng(1).random((4, 3, 8, 8))
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 0.0, 1.0
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"], f["labels"] = images, np.array([1, 0, 1, 0])
    data = adapters.load_hdf5(hdf5_params(tmp_path / "d.h5"), 8, tmp_path)
    np.testing.assert_array_equal(data.images, np.round(images * 255).astype(np.uint8))
    assert data.split is None and data.factors is None and data.class_names == ["0", "1"]


def test_hdf5_nhw_resized(tmp_path: Path) -> None:
    images = np.stack([np.full((12, 12), v, dtype=np.uint8) for v in (0, 90, 255)])
    images[2, 3:9, 3:9] = 0  # a dark square in the middle of a white image
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"], f["labels"] = images, np.array([0, 1, 0])
    data = adapters.load_hdf5(hdf5_params(tmp_path / "d.h5"), 24, tmp_path)
    assert data.images.shape == (3, 1, 24, 24)
    np.testing.assert_array_equal(data.images[0], 0)
    np.testing.assert_allclose(data.images[1], 90, atol=1)
    assert data.images[2, 0, 12, 12] < 10 and data.images[2, 0, 1, 1] > 245


def test_hdf5_missing_dataset(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"], f["labels"], f["meta/colour"] = np.zeros((2, 8, 8), np.uint8), [0, 1], [0.5, 0.25]
    with pytest.raises(KeyError, match=r"'targets'.*\['images', 'labels', 'meta/colour'\]"):
        adapters.load_hdf5(hdf5_params(tmp_path / "d.h5", labels="targets"), 8, tmp_path)
    with pytest.raises(KeyError, match="'size'"):
        adapters.load_hdf5(hdf5_params(tmp_path / "d.h5", factors=["size"]), 8, tmp_path)


# --------------------------------------------------------------------------- through prepare


def test_build_dataset_random_split_and_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    colours = [(i * 12, 255 - i * 12, (i * 40) % 256) for i in range(20)]
    rows = [f"{i:02d}.png,{'ab'[i % 2]}" for i in range(20)]
    for i, colour in enumerate(colours):
        write_image(root / f"{i:02d}.png", colour, (20, 14))
    (tmp_path / "list.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    cfg = {
        "kind": "image_folder",
        "image_size": 8,
        "split": {"val": 0.1, "test": 0.2},
        "seed": 3,
        "channels": 3,
        "image_folder": folder_params(Path("imgs"), csv="list.csv"),
    }
    data = build_dataset(cfg, base_dir=tmp_path)
    assert data.split is not None and data.split.dtype == np.int8
    assert np.bincount(data.split, minlength=3).tolist() == [14, 2, 4]
    np.testing.assert_array_equal(build_dataset(cfg, base_dir=tmp_path).split, data.split)
    for image, colour in zip(data.images, colours, strict=True):
        np.testing.assert_allclose(mean_colour(image), colour, atol=1)

    stored = PreparedData(write_prepared(tmp_path / "data.zarr", data, attrs={}))
    rows = [7, 2, 2, 19]  # any order, repeats allowed; read without loading the array
    np.testing.assert_array_equal(stored.rows("images", rows), data.images[rows])
    assert stored.rows("labels", []).shape == (0,) and stored.rows("images", []).shape == (0, 3, 8, 8)
    assert "images" not in stored._cache
    np.testing.assert_array_equal(stored.array("images"), data.images)
    np.testing.assert_array_equal(stored.rows("images", rows), data.images[rows])  # from the cache
    np.testing.assert_array_equal(stored.array("labels"), data.labels)
    np.testing.assert_array_equal(stored.array("split"), data.split)
    assert stored.class_names == ["a", "b"] and stored.channels == 3 and stored.image_size == (8, 8)


# --------------------------------------------------------------------------- checks of real data


def test_hdf5_labels_become_consecutive_classes_named_by_their_values(tmp_path: Path) -> None:
    images = np.zeros((4, 8, 8), dtype=np.uint8)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"], f["labels"], f["flags"] = (
            images,
            np.array([2, 5, 2, 5]),
            np.array([True, False, True, True]),
        )
    data = adapters.load_hdf5(hdf5_params(tmp_path / "d.h5"), 8, tmp_path)
    np.testing.assert_array_equal(data.labels, [0, 1, 0, 1])
    assert data.class_names == ["2", "5"]  # two classes, no empty ones below
    flags = adapters.load_hdf5(hdf5_params(tmp_path / "d.h5", labels="flags"), 8, tmp_path)
    assert flags.class_names == ["0", "1"] and flags.labels.tolist() == [1, 0, 1, 1]  # booleans as 0/1


@pytest.mark.parametrize("column", ["labels", "split"])
def test_infinite_hdf5_labels_and_split_codes_are_refused(tmp_path: Path, column: str) -> None:
    """+inf equals its rounding: it must not pass as an integer (INT64_MIN: an extra class, or train)."""
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = np.zeros((4, 8, 8), dtype=np.uint8)
        f["labels"], f["split"] = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0, 0.0])
        f["bad"] = np.array([0.0, 1.0, 2.0, np.inf])
    params = hdf5_params(tmp_path / "d.h5", split="split")
    assert adapters.load_hdf5(params, 8, tmp_path).split.tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="'bad' must hold finite non-negative integers"):
        adapters.load_hdf5({**params, column: "bad"}, 8, tmp_path)


def test_class_labels_that_are_not_finite_or_spell_one_number_twice_are_refused() -> None:
    assert adapters.sorted_classes(["10", "2", "1"]) == ["1", "2", "10"]
    assert adapters.sorted_classes(["cat", "dog", "cat"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="finite"):
        adapters.sorted_classes(["0", "1", "nan"])
    with pytest.raises(ValueError, match="one number in two ways"):
        adapters.sorted_classes(["0", "1", "1.0"])


def test_nan_pixels_are_refused() -> None:
    from diffxai.data.prepared import to_uint8

    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([[0.5, np.nan]], dtype=np.float32))


def test_a_split_from_the_data_must_give_every_part_an_image(celeba: Path) -> None:
    """CelebA's partition is contiguous: the first rows are all train (here: two of five)."""
    cfg = {"kind": "celeba", "image_size": 8, "channels": 3, "seed": 0, "split": {"val": 0.1, "test": 0.2},
           "celeba": celeba_params(max_images=2)}  # fmt: skip
    with pytest.raises(ValueError, match=r"own split has no val and no test image.*'train': 2"):
        build_dataset(cfg, celeba.parent)
    assert (build_dataset({**cfg, "celeba": celeba_params()}, celeba.parent).split == [0, 0, 1, 2, 2]).all()


def test_the_files_a_real_dataset_reads_are_its_inputs(tmp_path: Path) -> None:
    from diffxai.data.kinds import source_files

    folder = {"kind": "image_folder", "image_folder": {"root": "imgs", "csv": "meta/labels.csv"}}
    assert source_files(folder, tmp_path) == [str(tmp_path / "meta/labels.csv")]
    celeba = {"kind": "celeba", "celeba": celeba_params()}
    assert source_files(celeba, tmp_path) == [
        str(tmp_path / "celeba/list_attr_celeba.txt"),
        str(tmp_path / "celeba/list_eval_partition.txt"),
    ]
    assert source_files({"kind": "hdf5", "hdf5": {"path": "/data/d.h5"}}) == ["/data/d.h5"]
    assert source_files({"kind": "ellipses"}) == []


def test_hdf5_images_read_in_chunks_of_bytes_are_the_same(tmp_path: Path) -> None:
    images = np.random.default_rng(3).random((5, 6, 6, 3)).astype(np.float32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = images
    with h5py.File(tmp_path / "d.h5", "r") as f:
        whole, layout = adapters.read_hdf5_images(f["images"], 6)
        one_by_one, _ = adapters.read_hdf5_images(f["images"], 6, chunk_bytes=6 * 6 * 3 * 4)
        two_at_a_time, _ = adapters.read_hdf5_images(f["images"], 6, chunk_bytes=2 * 6 * 6 * 3 * 4 + 1)
    assert layout == "NHWC"
    np.testing.assert_array_equal(whole, np.round(images * 255).astype(np.uint8).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(one_by_one, whole)
    np.testing.assert_array_equal(two_at_a_time, whole)
