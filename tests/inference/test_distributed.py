"""geoseg tile on a dask.distributed cluster started on 127.0.0.1 gives the local result."""

from __future__ import annotations

import filecmp

import geopandas as gpd
import pytest
import shapely

from geoseg.tiling.tiler import tile

distributed = pytest.importorskip("distributed")


def local_cluster():
    """Two single-threaded worker processes on 127.0.0.1."""
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )


@pytest.mark.slow
def test_cluster_run_equals_threaded_run(make_raster, make_vector, tmp_path):
    image = make_raster(width=700, height=600, count=3)
    labels = make_vector(
        [
            shapely.box(500_020, 5_299_800, 500_200, 5_299_950),
            shapely.box(500_250, 5_299_750, 500_300, 5_299_900),
        ],
        kind=["field", "pond"],
    )
    options = dict(labels=labels, class_field="kind", boundary_width="1px", keep_empty=0.5, seed=3)
    local = tile([image], tmp_path / "local", workers=2, **options)
    with local_cluster() as cluster:
        calls = []
        remote = tile(
            [image],
            tmp_path / "remote",
            scheduler=cluster.scheduler_address,
            progress=lambda done, total: calls.append((done, total)),
            **options,
        )
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)
    assert (remote.written, remote.train, remote.val) == (local.written, local.train, local.val)
    ids = sorted(gpd.read_file(tmp_path / "local" / "chips.gpkg").id)
    assert ids == sorted(gpd.read_file(tmp_path / "remote" / "chips.gpkg").id)
    for chip_id in ids:
        for folder in ("images", "masks"):
            assert filecmp.cmp(
                tmp_path / "local" / folder / f"{chip_id}.tif",
                tmp_path / "remote" / folder / f"{chip_id}.tif",
                shallow=False,
            )


@pytest.mark.slow
def test_cluster_predict_equals_threaded_predict(tiny_model, tiny_chips, tmp_path):
    import rasterio

    from geoseg.inference.predictor import predict

    image = tiny_chips.parent / "scene" / "image.tif"
    options = dict(block_size=128, overlap=16, vectors=None, mode="parcels", device="cpu")
    predict(
        image, tiny_model, tmp_path / "local.tif", **{**options, "vectors": tmp_path / "l.gpkg"}
    )
    with local_cluster() as cluster:
        remote = predict(
            image,
            tiny_model,
            tmp_path / "remote.tif",
            scheduler=cluster.scheduler_address,
            **{**options, "vectors": tmp_path / "r.gpkg"},
        )
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "remote.tif") as b:
        assert (a.read() == b.read()).all() and (a.dataset_mask() == b.dataset_mask()).all()
    local_parcels = gpd.read_file(tmp_path / "l.gpkg")
    remote_parcels = gpd.read_file(tmp_path / "r.gpkg")
    assert remote.vectors.polygons == len(local_parcels) == len(remote_parcels)
    assert sorted(local_parcels.area.round(6)) == sorted(remote_parcels.area.round(6))


@pytest.mark.slow
def test_predict_survives_a_worker_killed_mid_run(tiny_model, tiny_chips, tmp_path):
    """Dask runs the blocks of a killed worker process again: the output is unchanged."""
    import os
    import signal

    import rasterio

    from geoseg.inference.predictor import predict

    image = tiny_chips.parent / "scene" / "image.tif"
    options = dict(block_size=64, overlap=16, device="cpu")
    predict(image, tiny_model, tmp_path / "local.tif", workers=1, **options)
    killed = []
    with local_cluster() as cluster, distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def kill_one(done, total):
            if done == 3 and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        remote = predict(
            image,
            tiny_model,
            tmp_path / "remote.tif",
            scheduler=cluster.scheduler_address,
            progress=kill_one,
            **options,
        )
    assert killed and remote.blocks == 64
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "remote.tif") as b:
        assert (a.read() == b.read()).all() and (a.dataset_mask() == b.dataset_mask()).all()


def test_cluster_keeps_a_bounded_number_of_tasks_in_flight(tmp_path):
    """With one worker thread, at most a few tasks start before the slow writer takes one."""
    import time

    from dask import delayed

    from geoseg.parallel import IN_FLIGHT_PER_THREAD, compute_each

    def task(i, folder):
        (folder / f"{i}").write_text(str(time.time()))
        return i

    consumed = []

    def consume(i):
        consumed.append((time.time(), len(list(tmp_path.iterdir()))))
        time.sleep(0.2)
        return i

    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        tasks = [delayed(task)(i, tmp_path) for i in range(12)]
        assert compute_each(tasks, consume, scheduler=cluster.scheduler_address) == list(range(12))
    limit = max(2, IN_FLIGHT_PER_THREAD)
    for k, (_, started) in enumerate(consumed):
        assert started <= k + limit + 1  # unbounded, all 12 would have started at once
