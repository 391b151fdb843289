"""Draw the SegQC extension and module icons (128 x 128 PNG) by code; run from the repository root."""
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
SCALE = 4  # draw large, downsample: smooth edges


def icon() -> Image.Image:
    s = SIZE * SCALE
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    # rounded dark tile: an image slice
    d.rounded_rectangle([4 * SCALE, 4 * SCALE, s - 4 * SCALE, s - 4 * SCALE], radius=22 * SCALE, fill=(34, 44, 58, 255))
    # grey "anatomy" blob
    d.ellipse([22 * SCALE, 26 * SCALE, 106 * SCALE, 104 * SCALE], fill=(92, 104, 118, 255))
    # segmentation: green filled region with a darker outline
    d.ellipse([38 * SCALE, 40 * SCALE, 86 * SCALE, 88 * SCALE], fill=(70, 190, 120, 200), outline=(30, 120, 70, 255),
              width=3 * SCALE)
    # predicted error: warm overlay where the mask misses the structure
    err = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    de = ImageDraw.Draw(err)
    de.pieslice([60 * SCALE, 36 * SCALE, 100 * SCALE, 76 * SCALE], 250, 60, fill=(255, 120, 0, 210))
    err = err.filter(ImageFilter.GaussianBlur(3 * SCALE))
    img = Image.alpha_composite(img, err)
    d = ImageDraw.Draw(img)
    # error box around it
    d.rectangle([62 * SCALE, 30 * SCALE, 104 * SCALE, 72 * SCALE], outline=(255, 60, 50, 255), width=4 * SCALE)
    # check mark badge: quality control
    d.ellipse([12 * SCALE, 78 * SCALE, 50 * SCALE, 116 * SCALE], fill=(255, 255, 255, 255))
    d.line([(21 * SCALE, 97 * SCALE), (29 * SCALE, 106 * SCALE), (42 * SCALE, 88 * SCALE)], fill=(30, 140, 80, 255),
           width=6 * SCALE, joint="curve")
    return img.resize((SIZE, SIZE), Image.LANCZOS)


if __name__ == "__main__":
    image = icon()
    image.save("ExtensionIcon.png")
    image.save("SegQC/Resources/Icons/SegQC.png")
