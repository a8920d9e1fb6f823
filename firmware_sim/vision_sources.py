"""The camera source on the simulator's camera: `SimCapture` in place of `cv2.VideoCapture`.

Kind "sim_camera". Everything after the capture — resizing, region of interest, skipping, the
counting core, intervals, occupancy, publishing — is the production camera source. The World is
shared with the simulated radios of the same process (`feed_for`), so a store's cameras and radios
see the same shoppers. Counts intervals follow the simulated clock (the frames' own time).
"""

from __future__ import annotations

from pydantic import Field

from edge.backoff import Backoff
from edge.settings import ConfigError
from edge.vision.camera_source import CameraOptions, CameraSource, Counter
from edge.vision.frames import SimFrameSource
from firmware_sim.radio_sources import SimRadio, feed_for


class SimCameraOptions(CameraOptions):
    uri: str | int = Field("sim", description="Name only: the simulator stands in for the camera.")
    sim: SimRadio = Field(description="The plan's camera node this source plays, and the simulated period.")


class SimCameraSource(CameraSource):
    Options = SimCameraOptions

    def __init__(self, name: str, options: SimCameraOptions, counter: Counter | None = None,
                 backoff: Backoff | None = None) -> None:
        try:
            feed, clock = feed_for(options.sim)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        world = feed.world
        node = world.plan.nodes[world.node_index[options.sim.node]]
        if node.camera is None:
            cams = ", ".join(n.node_id for n in world.plan.nodes if n.camera)
            raise ConfigError(f"{name}: sim.node {node.node_id!r} has no camera in the plan (cameras: {cams})")
        updates: dict[str, object] = {}
        if options.zone is None:
            updates["zone"] = node.zone or (node.camera.zones[0] if node.camera.zones else None)
        if options.utc_offset_h is None:
            updates["utc_offset_h"] = world.plan.timezone_offset_h
        options = options.model_copy(update=updates)
        frames = SimFrameSource.from_world(world, node.node_id, clock, width=options.width, height=options.height,
                                           fps=options.fps, skip=options.skip, roi=options.roi)
        super().__init__(name, options, counter=counter, frames=frames, backoff=backoff)
