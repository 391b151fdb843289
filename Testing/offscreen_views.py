"""Slicer's slice views rendered off-screen with slicer-core: what a Slicer user sees, as pixels.

In the desktop application a slice view is a ``qMRMLSliceWidget``: a ``vtkMRMLSliceLogic`` reslices and
blends the background, foreground and label layers into one RGBA image, CTK's ``vtkLightBoxRendererManager``
shows that image with a 2D image actor, and the slice-view displayable managers draw segmentations and
markups on top.  slicer-core has all of it except the Qt widget and the CTK renderer manager; trame-slicer
(``SliceRendererManager`` in ``trame_slicer/views/slice_view.py``) re-creates the latter with a
``vtkImageMapper``, and so does :class:`OffscreenSliceViews`.  The render windows are off-screen: VTK picks EGL
without a display (``libegl1`` and Mesa's ``libgl1-mesa-dri`` from Debian), or OSMesa (``libosmesa6``).

Pixel coordinates: ``(row, col)`` with row 0 at the top of the view, as in the PNG files; a slice node's
``XYToRAS`` maps view coordinates ``(x = col, y = height - 1 - row)`` to RAS millimetres.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np

if not os.environ.get("DISPLAY"):  # no X server: go straight to EGL instead of warning about the display first
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

VIEW_SIZE_PX = 320
SLICE_VIEW_DISPLAYABLE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager")
PROBE = ("import vtk; w = vtk.vtkRenderWindow(); w.SetOffScreenRendering(1); w.SetSize(8, 8); w.Render(); "
         "print(w.GetClassName())")


def offscreen_rendering_problem() -> Optional[str]:
    """Why off-screen OpenGL rendering cannot work here (None when it can); probed in a child process, since a
    missing GL library can abort the process that tries."""
    environment = dict(os.environ)
    if not environment.get("DISPLAY"):
        environment.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                               env=environment)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the rendering probe did not run: {exc}"
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return (f"no OpenGL for off-screen rendering ({tail}); install Debian's libegl1 and libgl1-mesa-dri "
                "(or libosmesa6)")
    return None


class OffscreenSliceView:
    """One slice view: slice logic, displayable managers, an image actor for the blended layers, a window."""

    def __init__(self, app, name: str, size_px: int) -> None:
        self.name = name
        self.size_px = size_px
        self.logic = app.slice_logics[name]
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(size_px, size_px)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()  # the markups widgets expect one
        self.interactor.SetRenderWindow(self.window)
        # What vtkLightBoxRendererManager does in Slicer: the slice logic's blended RGBA image, shown 1:1.  It is
        # added before the displayable managers' props: 2D props in the background are drawn in the order they
        # were added, and a segmentation's fill drawn first would be covered by the image.
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255)
        self.mapper.SetColorLevel(127.5)
        actor = vtk.vtkActor2D()
        actor.SetMapper(self.mapper)
        actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(actor)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.managers.SetMRMLDisplayableNode(self.logic.GetSliceNode())
        self.logic.ResizeSliceNode(size_px, size_px)

    @property
    def slice_node(self):
        return self.logic.GetSliceNode()

    def render(self) -> np.ndarray:
        """The view as an (H, W, 3) uint8 array, row 0 at the top."""
        self.logic.ResizeSliceNode(self.size_px, self.size_px)
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.managers.RequestRender()
        self.window.Render()
        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(self.window)
        grabber.ReadFrontBufferOff()
        grabber.Update()
        image = grabber.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(pixels[::-1, :, :3])

    def pixel_ras(self) -> np.ndarray:
        """RAS position (mm) of every pixel's centre: (H, W, 3)."""
        xy_to_ras = slicer.util.arrayFromVTKMatrix(self.slice_node.GetXYToRAS())
        rows, cols = np.mgrid[0:self.size_px, 0:self.size_px]
        xy = np.stack([cols, self.size_px - 1 - rows, np.zeros_like(rows), np.ones_like(rows)], axis=-1)
        return (xy.reshape(-1, 4) @ xy_to_ras.T)[:, :3].reshape(self.size_px, self.size_px, 3)

    def ras_to_pixel(self, ras) -> np.ndarray:
        """(row, col) of a RAS point projected onto the view plane."""
        ras_to_xy = np.linalg.inv(slicer.util.arrayFromVTKMatrix(self.slice_node.GetXYToRAS()))
        x, y = (ras_to_xy @ np.append(np.asarray(ras, dtype=float), 1.0))[:2]
        return np.array([self.size_px - 1 - y, x])

    def normal_ras(self) -> np.ndarray:
        return slicer.util.arrayFromVTKMatrix(self.slice_node.GetSliceToRAS())[:3, 2]


class OffscreenSliceViews:
    """The Red, Yellow and Green views of a :class:`slicer_scene.SlicerApp` scene, rendered off-screen."""

    def __init__(self, app, size_px: int = VIEW_SIZE_PX) -> None:
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(app.app_logic)
        for manager in SLICE_VIEW_DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.views = {name: OffscreenSliceView(app, name, size_px) for name in app.slice_logics}

    def __getitem__(self, name: str) -> OffscreenSliceView:
        return self.views[name]

    def fit(self) -> None:
        """Show the whole volume in every view (what Slicer does when a volume is loaded)."""
        for view in self.views.values():
            view.logic.FitSliceToAll(view.size_px, view.size_px)

    def render_all(self) -> dict[str, np.ndarray]:
        return {name: view.render() for name, view in self.views.items()}

    def facing(self, direction_ras) -> OffscreenSliceView:
        """The view whose plane is most nearly perpendicular to a RAS direction."""
        direction = np.asarray(direction_ras, dtype=float) / np.linalg.norm(direction_ras)
        return max(self.views.values(), key=lambda view: abs(float(view.normal_ras() @ direction)))

    def save(self, folder: Path, images: Optional[dict[str, np.ndarray]] = None) -> list[Path]:
        """Write the views (or given renders) as ``<folder>/<name>.png``."""
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        images = images or self.render_all()
        paths = []
        for name, pixels in images.items():
            paths.append(folder / f"{name}.png")
            Image.fromarray(pixels).save(paths[-1])
        return paths
