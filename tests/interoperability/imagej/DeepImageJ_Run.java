/*
 * TEST-ONLY STAND-IN for deepImageJ's "DeepImageJ Run" command. It is NOT deepImageJ.
 *
 * deepImageJ (and the Java deep-learning engines it downloads) cannot be installed on the machines this
 * project is tested on (no Fiji, no Maven). This ImageJ 1 plugin answers the same macro call as deepImageJ's
 * master / 3.1.x line (DeepImageJ_Run.runMacro at deepimagej-plugin commit c84362b, 2025-07-23, which uses
 * JDLL 0.6.1),
 *
 *   run("DeepImageJ Run", "model_path=/abs/model_dir input_path=/file/or/folder output_folder=/dir display_output=null");
 *
 * and follows that code step by step:
 *   - model_path (required; else IllegalArgumentException "DeepImageJ Run macro requires to the variable ..."):
 *     an absolute path is taken as it is; a relative one is looked up in <ImageJ folder>/models (deepImageJ:
 *     Fiji.app/models), then by nickname among the models there, then on bioimage.io (not here: offline, it
 *     fails as deepImageJ does when the model is nowhere);
 *   - the rdf is read with JDLL 0.6.1's own reader, ModelDescriptorFactory.readFromLocalFile(model/rdf.yaml),
 *     the unmodified JDLL sources of ../shared/tools/jdll-rdf (compiled by the test; their class path comes in
 *     the system property zaugnet.jdll.classpath) loaded into this JVM. Like deepImageJ: a runtime exception
 *     of the reader (ClassCastException, NullPointerException, IllegalArgumentException: what JDLL throws on
 *     rdfs it cannot read) leaves the command; a ModelSpecsException or IOException is printed (stack trace on
 *     stderr) and the command returns having done nothing; more than one input tensor is an
 *     IllegalArgumentException;
 *   - the weights are chosen as JDLL's BioimageIoModelJava.createBioimageioModel does: in the order of JDLL's
 *     ModelWeight (a HashMap: onnx, pytorch_state_dict, torchscript, ...), the first whose file is present and
 *     for which JDLL has a Java engine (onnx, pytorch for torchscript, tensorflow; never pytorch_state_dict).
 *     deepImageJ's first run downloads an engine for every weight format of the package, so every such format
 *     counts as installed here. Our packages: ONNX.
 *   - input_path: an image file, a folder of image files, or absent/"null" for the current image; the image
 *     becomes the input tensor by deepImageJ's ImageJGui.buildTensor rules: ImageJ CHANNELS -> the model's
 *     channel axis, SLICES -> its batch axis (for a model without a z axis), frames -> batch; pixels as float32;
 *   - output_folder: each output tensor is saved with IJ.saveAsTiff as "<input short title>_<output tensor
 *     id>.tif" (the batch axis as frames, as deepImageJ's ImPlusRaiManager.convert makes it); absent: nothing
 *     is saved; display_output: "all" shows the outputs; absent/"null" shows them only for the current image;
 *   - failures of the run leave the command as a RuntimeException (deepImageJ: "throw new
 *     RuntimeException(Types.stackTrace(e))"): ImageJ's Executer catches it and shows its stack trace in an
 *     "Exception" window (with ImageJ's main window) or prints it (without: -batch, headless), and the macro
 *     goes on; no output file is written. The call returns only when the outputs are written (deepImageJ
 *     3.1: "make macro block the edt").
 *
 * The numbers are real: the input tensor is written as a float32 .npy file and the SAME package is run by the
 * real `bioimageio predict` command line (bioimageio.core) with --weight-format set to the weights chosen
 * above; its .npy outputs are saved as 32-bit TIFFs. The executable comes from the system property
 * zaugnet.bioimageio or the environment variable ZAUGNET_BIOIMAGEIO (default: `bioimageio` on the PATH).
 * zaugnet.jdll.classpath is required: without it (or without JDLL's classes on it) the command throws an
 * IllegalStateException before anything runs, so no call is ever answered without JDLL's reader.
 *
 * Each call is logged (IJ.log), for tests:
 *   DeepImageJ Run (test stand-in): <title> -> input (b, c, y, x), weights <format> -> bioimageio predict -> <files>
 *   DeepImageJ Run (test stand-in)   batch <k>: channel ranges [lo, hi] [lo, hi] ...   (one line per batch element)
 *
 * Compile: javac -cp /usr/share/java/ij.jar -d DIR/plugins DeepImageJ_Run.java
 * Use:     java -Dplugins.dir=DIR -Dzaugnet.bioimageio=/path/to/bioimageio -Dzaugnet.jdll.classpath=CP -jar ij.jar ...
 */

import ij.IJ;
import ij.ImagePlus;
import ij.ImageStack;
import ij.Macro;
import ij.WindowManager;
import ij.plugin.PlugIn;
import ij.process.FloatProcessor;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class DeepImageJ_Run implements PlugIn {

    private static final String NAME = "DeepImageJ Run (test stand-in)";
    private static final String MACRO_INFO = "https://github.com/deepimagej/deepimagej-plugin/blob/main/README.md#macros";
    private static final String JDLL = "io.bioimage.modelrunner.";
    /** JDLL's classes, loaded once per JVM (as deepImageJ's are). */
    private static ClassLoader jdllLoader;

    /** What the stand-in needs of the model: JDLL's descriptor, reduced. */
    private static final class Model {
        File folder;
        String inputName;
        String inputAxes = "bcyx";
        List<String> outputNames = new ArrayList<>();
        List<String> outputAxes = new ArrayList<>();
        String weightFormat;
    }

    @Override
    public void run(String arg) {
        // deepImageJ: not a macro -> its GUI; a macro without options -> nothing
        if (!IJ.isMacro()) {
            IJ.log(NAME + ": only macro calls are answered (deepImageJ would open its window)");
            return;
        }
        if (Macro.getOptions() == null)
            return;
        runMacro(Macro.getOptions());
    }

    private void runMacro(String options) {
        String modelArg = parseArg(options, "model_path", true);
        String input = parseArg(options, "input_path", false);
        String output = parseArg(options, "output_folder", false);
        String display = parseArg(options, "display_output", false);
        File modelFolder = identifyModel(modelArg);

        if (input != null && !new File(input).exists())
            throw new IllegalArgumentException("The provided input folder does not exist: " + input);
        if (output != null && !new File(output).isDirectory() && !new File(output).mkdirs())
            throw new IllegalArgumentException("The provided output folder does not exist and cannot be created: " + input);

        Model model;
        try {
            model = loadDescriptor(modelFolder);
        } catch (IOException e) {  // deepImageJ: catch (ModelSpecsException | IOException e) -> print, return
            e.printStackTrace();
            return;
        }
        try {
            if (input == null) {
                ImagePlus imp = WindowManager.getCurrentImage();
                process(imp, model, output, display == null || display.equals("all"));
            } else if (new File(input).isDirectory()) {
                File[] files = new File(input).listFiles();
                Arrays.sort(files);
                for (File f : files)
                    process(IJ.openImage(f.getAbsolutePath()), model, output, display != null && display.equals("all"));
            } else {
                process(IJ.openImage(new File(input).getAbsolutePath()), model, output,
                        display != null && display.equals("all"));
            }
        } catch (IOException e) {  // deepImageJ: catch (IOException | LoadModelException | RunModelException ...)
            throw new RuntimeException(stackTrace(e));
        }
    }

    /** deepImageJ's parseArg: absent, "" and "null" are null; a missing required key throws. */
    private static String parseArg(String options, String key, boolean required) {
        String value = Macro.getValue(options, key, null);
        if (value != null && (value.equals("") || value.equals("null")))
            value = null;
        if (value == null && required)
            throw new IllegalArgumentException("DeepImageJ Run macro requires to the variable '" + key + "'. "
                    + "For more info, please visit: " + MACRO_INFO);
        return value;
    }

    /** deepImageJ's identifyModel, offline: absolute as given; else <ImageJ>/models/<arg>; else not found. */
    private static File identifyModel(String modelArg) {
        if (new File(modelArg).isAbsolute())
            return new File(modelArg);
        File models = new File(IJ.getDirectory("imagej"), "models");
        if (new File(models, modelArg).isDirectory())
            return new File(models, modelArg).getAbsoluteFile();
        // deepImageJ then matches the nicknames of the models in that folder and of bioimage.io's models
        System.err.println("Looking for the model in the Bioimage.io repo: " + modelArg);
        throw new IllegalArgumentException("Model '" + modelArg + "' not found either locally or on the Bioimage.io repo."
                + " (" + NAME + ": looked in " + models + "; bioimage.io is not searched here)");
    }

    // ------------------------------------------------------------------ JDLL's reader
    private static synchronized ClassLoader jdll() throws IOException {
        if (jdllLoader != null)
            return jdllLoader;
        String cp = System.getProperty("zaugnet.jdll.classpath");
        if (cp == null || cp.isEmpty())
            throw new IllegalStateException(NAME + ": the system property zaugnet.jdll.classpath is not set: it must "
                    + "name JDLL 0.6.1's compiled reader and its jars (the tests' jdll_classpath fixture), which read "
                    + "every rdf as deepImageJ does");
        List<URL> urls = new ArrayList<>();
        for (String part : cp.split(File.pathSeparator))
            if (!part.isEmpty())
                urls.add(new File(part).toURI().toURL());
        jdllLoader = new URLClassLoader(urls.toArray(new URL[0]), DeepImageJ_Run.class.getClassLoader());
        return jdllLoader;
    }

    /** deepImageJ's loadDescriptor (JDLL's readFromLocalFile and the one-input check), then the weights. */
    private static Model loadDescriptor(File folder) throws IOException {
        String rdf = folder + File.separator + "rdf.yaml";
        ClassLoader cl = jdll();
        Object descriptor;
        try {
            Class<?> factory = Class.forName(JDLL + "bioimageio.description.ModelDescriptorFactory", true, cl);
            descriptor = factory.getMethod("readFromLocalFile", String.class).invoke(null, rdf);
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException)
                throw (RuntimeException) cause;
            if (cause instanceof Error)
                throw (Error) cause;
            if (cause instanceof IOException)
                throw (IOException) cause;
            // ModelSpecsException: deepImageJ prints it and returns
            throw new IOException(cause);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(NAME + ": JDLL's reader is not on zaugnet.jdll.classpath: " + e, e);
        }
        Model m = new Model();
        m.folder = folder;
        List<?> inputs = (List<?>) call(descriptor, "getInputTensors");
        if (inputs.size() > 1)
            throw new IllegalArgumentException("Selected model requires more than one input, currently only models with 1 input"
                    + " are supported.");
        m.inputName = (String) call(inputs.get(0), "getName");
        m.inputAxes = ((String) call(inputs.get(0), "getAxesOrder")).toLowerCase();
        for (Object out : (List<?>) call(descriptor, "getOutputTensors")) {
            m.outputNames.add((String) call(out, "getName"));
            m.outputAxes.add(((String) call(out, "getAxesOrder")).toLowerCase());
        }
        m.weightFormat = chooseWeights(descriptor, folder, cl);
        return m;
    }

    /** JDLL's createBioimageioModel order: the first weight, in ModelWeight's order, whose file is present and
     *  that has a Java engine; none: what RunnerAdapter.load throws (LoadModelException), as deepImageJ wraps it. */
    private static String chooseWeights(Object descriptor, File folder, ClassLoader cl) {
        Object weights = call(descriptor, "getWeights");
        List<?> all = (List<?>) call(weights, "gettAllSupportedWeightObjects");
        List<String> tried = new ArrayList<>();
        for (Object w : all) {
            String framework = (String) call(w, "getFramework");
            String source = (String) call(w, "getSourceFileName");
            boolean present = source != null && new File(folder, source).isFile();
            if (framework.equals("tensorflow_saved_model_bundle") && !present)
                present = new File(folder, "saved_model.pb").isFile() && new File(folder, "variables").isDirectory();
            String engine;
            try {
                Class<?> engines = Class.forName(JDLL + "versionmanagement.AvailableEngines", true, cl);
                engine = (String) engines.getMethod("getSupportedFrameworkTag", String.class).invoke(null, framework);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException(NAME + ": JDLL's AvailableEngines: " + e, e);
            }
            tried.add(framework + (present ? "" : " (file missing)") + (engine == null ? " (no Java engine)" : ""));
            if (present && engine != null)
                return framework;
        }
        throw new RuntimeException("io.bioimage.modelrunner.exceptions.LoadModelException: java.io.IOException: Please install a "
                + "compatible engine with the model weights. The model weights are: " + tried);
    }

    private static Object call(Object target, String method) {
        try {
            Method m = target.getClass().getMethod(method);
            return m.invoke(target);
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException)
                throw (RuntimeException) cause;
            throw new RuntimeException(cause);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(NAME + ": JDLL has no " + target.getClass().getName() + "." + method, e);
        }
    }

    // ------------------------------------------------------------------ one image
    private void process(ImagePlus imp, Model model, String outputFolder, boolean show) throws IOException {
        if (imp == null)
            throw new NullPointerException("no image (ImageJ could not open the input, or no image is open)");
        String title = imp.getShortTitle();
        // deepImageJ's ImageJGui.buildTensor: which ImageJ dimension becomes which tensor axis
        String spec = model.inputAxes;
        int c = imp.getNChannels(), z = imp.getNSlices(), t = imp.getNFrames(), w = imp.getWidth(), h = imp.getHeight();
        Map<Character, Integer> size = new LinkedHashMap<>();
        Map<Character, Character> from = new LinkedHashMap<>();  // tensor axis -> ImageJ dimension (c, z, t)
        size.put('x', w);
        size.put('y', h);
        if (c != 1 && (spec.contains("c") || t != 1)) { size.put('c', c); from.put('c', 'c'); }
        if (c != 1 && !spec.contains("c") && t == 1) { size.put('b', c); from.put('b', 'c'); }
        if (z != 1 && (spec.contains("z") || t != 1)) { size.put('z', z); from.put('z', 'z'); }
        if (z != 1 && !spec.contains("z") && t == 1 && !from.containsKey('b')) { size.put('b', z); from.put('b', 'z'); }
        if (t != 1) { size.put('b', t); from.put('b', 't'); }
        for (char ax : size.keySet())
            if (spec.indexOf(ax) < 0 && size.get(ax) != 1)
                throw new IllegalArgumentException(NAME + ": the image's axis '" + ax + "' (size " + size.get(ax)
                        + ") is not in the model's axes " + spec + " (deepImageJ would take its first element only)");
        int[] shape = new int[spec.length()];
        for (int i = 0; i < shape.length; i++)
            shape[i] = size.getOrDefault(spec.charAt(i), 1);
        int count = 1;
        for (int s : shape)
            count *= s;
        float[] data = new float[count];
        ImageStack stack = imp.getStack();
        float[][] planes = new float[stack.getSize() + 1][];
        int[] pos = new int[shape.length];
        for (int k = 0; k < count; k++) {
            int rem = k;
            for (int i = shape.length - 1; i >= 0; i--) {
                pos[i] = rem % shape[i];
                rem /= shape[i];
            }
            int cc = 1, zz = 1, tt = 1, xx = 0, yy = 0;
            for (int i = 0; i < shape.length; i++) {
                char ax = spec.charAt(i);
                if (ax == 'x') xx = pos[i];
                else if (ax == 'y') yy = pos[i];
                else if (from.containsKey(ax)) {
                    char dim = from.get(ax);
                    if (dim == 'c') cc = pos[i] + 1;
                    else if (dim == 'z') zz = pos[i] + 1;
                    else tt = pos[i] + 1;
                }
            }
            int index = imp.getStackIndex(cc, zz, tt);
            if (planes[index] == null)
                planes[index] = (float[]) stack.getProcessor(index).convertToFloatProcessor().getPixels();
            data[k] = planes[index][yy * w + xx];
        }

        File tmp = Files.createTempDirectory("dij_standin_").toFile();
        try {
            File npy = new File(tmp, "input.npy");
            writeNpy(npy, data, shape);
            File results = new File(tmp, "outputs");
            runBioimageio(model, npy, results, tmp);
            File[] outs = results.listFiles((d, n) -> n.endsWith(".npy"));
            if (outs == null || outs.length == 0)
                throw new IOException("bioimageio predict wrote no output");
            Arrays.sort(outs);
            StringBuilder written = new StringBuilder();
            for (File out : outs) {
                String id = out.getName().substring(0, out.getName().length() - 4);
                int index = model.outputNames.indexOf(id);
                String axes = index >= 0 ? model.outputAxes.get(index) : "bcyx";
                ImagePlus result = readNpyAsImage(out, axes, title + "_" + id);
                if (outputFolder != null) {
                    String path = outputFolder + File.separator + result.getTitle();
                    IJ.saveAsTiff(result, path);  // adds .tif
                    written.append(' ').append(new File(path).getName()).append(".tif");
                }
                if (show)
                    result.show();
            }
            // what a test can check: the tensor the image became and the files written
            IJ.log(NAME + ": " + title + " -> input " + Arrays.toString(shape).replace('[', '(').replace(']', ')')
                    + ", weights " + model.weightFormat + " -> bioimageio predict ->" + written);
            int bAxis = spec.indexOf('b'), cAxis = spec.indexOf('c');
            if (bAxis >= 0 && cAxis >= 0)
                logRanges(data, shape, bAxis, cAxis);
        } finally {
            deleteTree(tmp);
        }
    }

    /** One log line per batch element: the value range of each channel. */
    private static void logRanges(float[] data, int[] shape, int bAxis, int cAxis) {
        int nb = shape[bAxis], nc = shape[cAxis];
        float[] lo = new float[nb * nc], hi = new float[nb * nc];
        Arrays.fill(lo, Float.POSITIVE_INFINITY);
        Arrays.fill(hi, Float.NEGATIVE_INFINITY);
        int[] pos = new int[shape.length];
        for (int k = 0; k < data.length; k++) {
            int rem = k;
            for (int i = shape.length - 1; i >= 0; i--) {
                pos[i] = rem % shape[i];
                rem /= shape[i];
            }
            int j = pos[bAxis] * nc + pos[cAxis];
            lo[j] = Math.min(lo[j], data[k]);
            hi[j] = Math.max(hi[j], data[k]);
        }
        for (int b = 0; b < nb; b++) {
            StringBuilder line = new StringBuilder(NAME + "   batch " + (b + 1) + ": channel ranges");
            for (int ch = 0; ch < nc; ch++)
                line.append(" [").append(lo[b * nc + ch]).append(", ").append(hi[b * nc + ch]).append(']');
            IJ.log(line.toString());
        }
    }

    private static void runBioimageio(Model model, File npy, File results, File workDir) throws IOException {
        String exe = System.getProperty("zaugnet.bioimageio");
        if (exe == null || exe.isEmpty())
            exe = System.getenv("ZAUGNET_BIOIMAGEIO");
        if (exe == null || exe.isEmpty())
            exe = "bioimageio";
        List<String> cmd = new ArrayList<>(Arrays.asList(exe, "predict", model.folder.getPath(), "--inputs", npy.getPath(),
                "--weight-format", model.weightFormat));
        for (String id : model.outputNames) { cmd.add("--outputs"); cmd.add(new File(results, id + ".npy").getPath()); }
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(workDir).redirectErrorStream(true);
        Process p = pb.start();
        String log;
        try (InputStream in = p.getInputStream()) {
            log = new String(readAll(in), StandardCharsets.UTF_8);
        }
        int rc;
        try {
            rc = p.waitFor();
        } catch (InterruptedException e) {
            p.destroy();
            throw new IOException("interrupted while bioimageio predict ran", e);
        }
        if (rc != 0) {
            String tail = log.length() > 2000 ? log.substring(log.length() - 2000) : log;
            // in deepImageJ the engine's failure is a RunModelException, rethrown as a RuntimeException
            throw new IOException("io.bioimage.modelrunner.exceptions.RunModelException: bioimageio predict exited with "
                    + rc + " (" + NAME + ", weights " + model.weightFormat + "):\n" + tail);
        }
    }

    private static String stackTrace(Throwable e) {
        StringWriter sw = new StringWriter();
        e.printStackTrace(new PrintWriter(sw));
        return sw.toString();
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

    /** A float32/float64 little-endian C-order .npy whose axes are `axes` (e.g. bcyx) as a 32-bit ImagePlus
     *  laid out as deepImageJ's ImPlusRaiManager.convert makes it: c -> channels, z -> slices, b (t) -> frames. */
    static ImagePlus readNpyAsImage(File file, String axes, String title) throws IOException {
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
        if (!dtype.equals("<f4") && !dtype.equals("<f8"))
            throw new IOException(file + ": unsupported dtype " + dtype);
        List<Integer> shape = new ArrayList<>();
        for (String s : shapeM.group(1).split(","))
            if (!s.trim().isEmpty())
                shape.add(Integer.parseInt(s.trim()));
        axes = axes.toLowerCase().replace('t', 'b');
        if (shape.size() != axes.length() || axes.indexOf('x') < 0 || axes.indexOf('y') < 0)
            throw new IOException(file + ": shape " + shape + " does not fit the axes " + axes);
        int n = 1;
        for (int s : shape)
            n *= s;
        ByteBuffer raw = ByteBuffer.wrap(bytes, offset + headerLen, bytes.length - offset - headerLen)
                .order(ByteOrder.LITTLE_ENDIAN);
        float[] values = new float[n];
        for (int i = 0; i < n; i++)
            values[i] = dtype.equals("<f4") ? raw.getFloat() : (float) raw.getDouble();
        int w = shape.get(axes.indexOf('x')), h = shape.get(axes.indexOf('y'));
        int nc = axes.indexOf('c') >= 0 ? shape.get(axes.indexOf('c')) : 1;
        int nz = axes.indexOf('z') >= 0 ? shape.get(axes.indexOf('z')) : 1;
        int nt = axes.indexOf('b') >= 0 ? shape.get(axes.indexOf('b')) : 1;
        float[][] planes = new float[nc * nz * nt][w * h];
        int[] pos = new int[shape.size()];
        for (int k = 0; k < n; k++) {
            int rem = k;
            for (int i = shape.size() - 1; i >= 0; i--) {
                pos[i] = rem % shape.get(i);
                rem /= shape.get(i);
            }
            int x = 0, y = 0, cc = 0, zz = 0, tt = 0;
            for (int i = 0; i < pos.length; i++) {
                char ax = axes.charAt(i);
                if (ax == 'x') x = pos[i];
                else if (ax == 'y') y = pos[i];
                else if (ax == 'c') cc = pos[i];
                else if (ax == 'z') zz = pos[i];
                else if (ax == 'b') tt = pos[i];
            }
            planes[(tt * nz + zz) * nc + cc][y * w + x] = values[k];
        }
        ImageStack stack = new ImageStack(w, h);
        for (float[] plane : planes)
            stack.addSlice(new FloatProcessor(w, h, plane));
        ImagePlus imp = new ImagePlus(title, stack);
        imp.setDimensions(nc, nz, nt);
        if (nc * nz * nt > 1)
            imp.setOpenAsHyperStack(true);
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
