/*
 * TEST-ONLY STAND-IN for deepImageJ's "DeepImageJ Run" command. It is NOT deepImageJ.
 *
 * deepImageJ (and the Java deep-learning engines it downloads) cannot be installed on the machines this
 * project is tested on (no Fiji, no Maven). This ImageJ 1 plugin answers the same macro call as
 * deepImageJ's current master / 3.1.x line,
 *
 *   run("DeepImageJ Run", "model_path=/abs/model_dir input_path=/file/or/folder output_folder=/dir display_output=null");
 *
 * and honours the same file contract, as far as it is documented (see fiji_macros/README.md):
 *   - model_path: a BioImage.IO model folder that holds rdf.yaml (required);
 *   - input_path: an image file, a folder of image files, or absent/"null" for the current image;
 *   - output_folder: where each output tensor is written as "<input title>_<output tensor id>.tif"
 *     (title = the input file's name without its extension; absent/"null" = the model folder);
 *   - display_output: "null" writes only the files; anything else also shows the outputs;
 *   - ImageJ CHANNELS map to the model's channel axis, SLICES to the batch axis; pixels go in as float32.
 *
 * The numbers are real: the image is written as a (batch, channel, y, x) float32 .npy file and the SAME
 * package is run by the real `bioimageio predict` command line (bioimageio.core), whose .npy outputs are
 * written back as 32-bit TIFFs. The executable comes from the system property `zaugnet.bioimageio` or the
 * environment variable ZAUGNET_BIOIMAGEIO (default: `bioimageio` on the PATH); the weight format from
 * `zaugnet.weight_format` (default torchscript, the format deepImageJ runs with its PyTorch engine).
 *
 * Compile: javac -cp /usr/share/java/ij.jar -d DIR/plugins DeepImageJ_Run.java
 * Use:     java -Dplugins.dir=DIR -Dzaugnet.bioimageio=/path/to/bioimageio -jar ij.jar -batch macro.ijm "args"
 */

import ij.IJ;
import ij.ImagePlus;
import ij.ImageStack;
import ij.Macro;
import ij.WindowManager;
import ij.plugin.PlugIn;
import ij.process.FloatProcessor;
import ij.process.ImageProcessor;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class DeepImageJ_Run implements PlugIn {

    private static final String NAME = "DeepImageJ Run (test stand-in)";

    @Override
    public void run(String arg) {
        String options = Macro.getOptions();
        try {
            if (options == null)
                throw new IllegalArgumentException("this test stand-in only answers macro calls with options");
            String model = value(options, "model_path");
            if (model == null)
                throw new IllegalArgumentException("DeepImageJ Run macro requires the variable 'model_path='");
            File modelDir = new File(model).getAbsoluteFile();
            if (!new File(modelDir, "rdf.yaml").isFile())
                throw new IllegalArgumentException("no rdf.yaml in the model folder " + modelDir);
            String input = value(options, "input_path");
            String outName = value(options, "output_folder");
            File outDir = outName == null ? modelDir : new File(outName).getAbsoluteFile();
            if (!outDir.isDirectory() && !outDir.mkdirs())
                throw new IOException("cannot create the output folder " + outDir);
            String display = value(options, "display_output");
            boolean show = display != null && !display.equalsIgnoreCase("null");

            if (input == null) {
                ImagePlus imp = WindowManager.getCurrentImage();
                if (imp == null)
                    throw new IllegalArgumentException("no input_path and no image open");
                process(imp, stripExtension(imp.getTitle()), modelDir, outDir, show);
            } else {
                File in = new File(input);
                File[] files = in.isDirectory() ? in.listFiles() : new File[] {in};
                if (files == null || !in.exists())
                    throw new IllegalArgumentException("input_path not found: " + in);
                Arrays.sort(files);
                for (File f : files) {
                    if (f.isDirectory())
                        continue;
                    ImagePlus imp = IJ.openImage(f.getPath());
                    if (imp == null)
                        throw new IllegalArgumentException("ImageJ cannot open " + f);
                    process(imp, stripExtension(f.getName()), modelDir, outDir, show);
                    imp.close();
                }
            }
        } catch (Exception e) {
            // deepImageJ reports failures in the Log / an exception window and writes no output file.
            IJ.log(NAME + ": error: " + e.getMessage());
            System.err.println(NAME + ": error: " + e.getMessage());
        }
    }

    /** A macro option or null where it is absent or "null" (brackets around values are removed by ImageJ). */
    private static String value(String options, String key) {
        String v = Macro.getValue(options, key, null);
        return v == null || v.equals("null") || v.isEmpty() ? null : v;
    }

    private static String stripExtension(String name) {
        int dot = name.lastIndexOf('.');
        return dot > 0 ? name.substring(0, dot) : name;
    }

    private void process(ImagePlus imp, String title, File modelDir, File outDir, boolean show) throws Exception {
        if (imp.getNFrames() > 1)
            throw new IllegalArgumentException(imp.getTitle() + ": frames are not supported by this stand-in");
        int c = imp.getNChannels(), b = imp.getNSlices(), h = imp.getHeight(), w = imp.getWidth();
        float[] data = new float[b * c * h * w];
        ImageStack stack = imp.getStack();
        int k = 0;
        for (int z = 1; z <= b; z++) {          // ImageJ slices -> batch
            for (int ch = 1; ch <= c; ch++) {   // ImageJ channels -> channel axis
                ImageProcessor ip = stack.getProcessor(imp.getStackIndex(ch, z, 1));
                for (int i = 0; i < h * w; i++)
                    data[k++] = ip.getf(i);
            }
        }
        StringBuilder ranges = new StringBuilder();
        for (int ch = 0; ch < c; ch++) {
            float lo = Float.POSITIVE_INFINITY, hi = Float.NEGATIVE_INFINITY;
            for (int z = 0; z < b; z++)
                for (int i = 0; i < h * w; i++) {
                    float v = data[(z * c + ch) * h * w + i];
                    lo = Math.min(lo, v);
                    hi = Math.max(hi, v);
                }
            ranges.append(" [").append(lo).append(", ").append(hi).append(']');
        }
        File tmp = Files.createTempDirectory("dij_standin_").toFile();
        try {
            File npy = new File(tmp, "input.npy");
            writeNpy(npy, data, new int[] {b, c, h, w});
            File results = new File(tmp, "outputs");
            runBioimageio(modelDir, npy, results, tmp);
            File[] outs = results.listFiles((d, n) -> n.endsWith(".npy"));
            if (outs == null || outs.length == 0)
                throw new IOException("bioimageio predict wrote no output");
            Arrays.sort(outs);
            StringBuilder written = new StringBuilder();
            for (File out : outs) {
                String id = stripExtension(out.getName());
                ImagePlus result = readNpyAsImage(out, title + "_" + id);
                File target = new File(outDir, title + "_" + id + ".tif");
                if (!IJ.saveAsTiff(result, target.getPath()))
                    throw new IOException("cannot write " + target);
                if (show)
                    result.show();
                written.append(' ').append(target.getName());
            }
            // what a test can check: the tensor the image became (channels -> C, slices -> batch) and the files
            IJ.log(NAME + ": " + title + " -> input (" + b + ", " + c + ", " + h + ", " + w + "), channel ranges"
                    + ranges + " -> bioimageio predict ->" + written);
        } finally {
            deleteTree(tmp);
        }
    }

    private static void runBioimageio(File modelDir, File npy, File results, File workDir) throws Exception {
        String exe = System.getProperty("zaugnet.bioimageio");
        if (exe == null || exe.isEmpty())
            exe = System.getenv("ZAUGNET_BIOIMAGEIO");
        if (exe == null || exe.isEmpty())
            exe = "bioimageio";
        String format = System.getProperty("zaugnet.weight_format", "torchscript");
        List<String> cmd = new ArrayList<>(Arrays.asList(exe, "predict", modelDir.getPath(), "--inputs", npy.getPath(),
                "--outputs", new File(results, "{output_id}.npy").getPath(), "--weight-format", format));
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(workDir).redirectErrorStream(true);
        Process p = pb.start();
        String log;
        try (InputStream in = p.getInputStream()) {
            log = new String(readAll(in), StandardCharsets.UTF_8);
        }
        int rc = p.waitFor();
        if (rc != 0) {
            String tail = log.length() > 2000 ? log.substring(log.length() - 2000) : log;
            throw new IOException("bioimageio predict exited with " + rc + ":\n" + tail);
        }
    }

    // ------------------------------------------------------------------ .npy (format version 1.0)
    static void writeNpy(File file, float[] data, int[] shape) throws IOException {
        StringBuilder dims = new StringBuilder();
        for (int s : shape)
            dims.append(s).append(", ");
        String dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims.toString().trim() + "), }";
        int unpadded = 10 + dict.length() + 1;
        int total = (unpadded + 63) / 64 * 64;
        StringBuilder header = new StringBuilder(dict);
        while (10 + header.length() + 1 < total)
            header.append(' ');
        header.append('\n');
        byte[] head = header.toString().getBytes(StandardCharsets.US_ASCII);
        ByteBuffer buf = ByteBuffer.allocate(10 + head.length + 4 * data.length).order(ByteOrder.LITTLE_ENDIAN);
        buf.put((byte) 0x93).put("NUMPY".getBytes(StandardCharsets.US_ASCII)).put((byte) 1).put((byte) 0);
        buf.putShort((short) head.length).put(head);
        for (float v : data)
            buf.putFloat(v);
        try (OutputStream out = new FileOutputStream(file)) {
            out.write(buf.array());
        }
    }

    /** A float32/float64 little-endian C-order .npy of shape (..., y, x) as a 32-bit stack of its leading planes;
     *  a (batch, channel, y, x) array becomes channels x slices. */
    static ImagePlus readNpyAsImage(File file, String title) throws IOException {
        byte[] bytes = Files.readAllBytes(file.toPath());
        if (bytes.length < 10 || (bytes[0] & 0xff) != 0x93)
            throw new IOException(file + ": not a .npy file");
        int major = bytes[6];
        int headerLen, offset;
        ByteBuffer bb = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        if (major == 1) {
            headerLen = bb.getShort(8) & 0xffff;
            offset = 10;
        } else {
            headerLen = bb.getInt(8);
            offset = 12;
        }
        String header = new String(bytes, offset, headerLen, StandardCharsets.US_ASCII);
        Matcher descr = Pattern.compile("'descr':\\s*'([^']+)'").matcher(header);
        Matcher shapeM = Pattern.compile("'shape':\\s*\\(([^)]*)\\)").matcher(header);
        if (!descr.find() || !shapeM.find() || header.contains("'fortran_order': True"))
            throw new IOException(file + ": unsupported .npy header " + header.trim());
        String dtype = descr.group(1);
        List<Integer> shape = new ArrayList<>();
        for (String s : shapeM.group(1).split(","))
            if (!s.trim().isEmpty())
                shape.add(Integer.parseInt(s.trim()));
        if (shape.size() < 2)
            throw new IOException(file + ": expected at least 2 dimensions, got " + shape);
        int h = shape.get(shape.size() - 2), w = shape.get(shape.size() - 1);
        int planes = 1;
        for (int i = 0; i < shape.size() - 2; i++)
            planes *= shape.get(i);
        int channels = shape.size() >= 4 ? shape.get(shape.size() - 3) : 1;
        ByteBuffer data = ByteBuffer.wrap(bytes, offset + headerLen, bytes.length - offset - headerLen)
                .order(ByteOrder.LITTLE_ENDIAN);
        ImageStack stack = new ImageStack(w, h);
        for (int p = 0; p < planes; p++) {
            float[] px = new float[h * w];
            for (int i = 0; i < px.length; i++) {
                if (dtype.equals("<f4"))
                    px[i] = data.getFloat();
                else if (dtype.equals("<f8"))
                    px[i] = (float) data.getDouble();
                else
                    throw new IOException(file + ": unsupported dtype " + dtype);
            }
            stack.addSlice(new FloatProcessor(w, h, px));
        }
        ImagePlus imp = new ImagePlus(title, stack);
        imp.setDimensions(channels, planes / channels, 1);
        return imp;
    }

    private static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[8192];
        int n;
        while ((n = in.read(buf)) > 0)
            out.write(buf, 0, n);
        return out.toByteArray();
    }

    private static void deleteTree(File f) {
        File[] children = f.listFiles();
        if (children != null)
            for (File c : children)
                deleteTree(c);
        f.delete();
    }
}
