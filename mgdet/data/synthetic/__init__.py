"""The embedded default dataset (``data.source: synthetic``): procedurally generated shapes,
no download.

Every image is drawn with numpy from its own random stream ``(seed, split, index)``, so image ``i``
is the same whatever ``num_images`` is, and the train / val / test splits never share an image.
The generated arrays are cached in memory per ``(num_images, image_size, seed, split)``
(:mod:`~mgdet.data.synthetic.generated`); the shapes and their colours:
:mod:`~mgdet.data.synthetic.shapes`; the painter: :mod:`~mgdet.data.synthetic.painter`; the
``synthetic`` data source: :mod:`~mgdet.data.synthetic.source`.

What an image holds (painter's order, back to front):
  1. background: a two-colour linear gradient + low-frequency colour noise, sometimes faint
     stripes or a checkerboard;
  2. clutter that is not a class: thick lines, random curves, irregular blobs, arcs, dots;
  3. 0..14 objects of the :data:`~mgdet.data.synthetic.shapes.CLASS_NAMES` classes (about 7 %
     of images have none), each with a random colour and a texture (solid, stripes, noise,
     gradient), scale drawn from the COCO small / medium / large ranges *in pixels at
     ``image_size``* (sqrt of the box area below 32, 32..96, above 96), aspect ratio and
     rotation per class; objects are often placed next to earlier ones, so they overlap and
     occlude each other;
  4. a few occluders drawn over the objects (lines, curves, blobs);
  5. pixel noise over everything.
A box is the full extent of its object's mask (inside the image) even when the object is partly
hidden; an object with more than 70 % of its pixels hidden (``MIN_VISIBLE``) is dropped from the
annotations (it stays painted, as in real data).
"""
