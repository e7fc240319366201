// zaugnet_c.ijm - ZAugNet-C z-slice interpolation of a z-stack through deepImageJ, at any positions.
//
// ZAugNet-C predicts the slice at a relative position z in (0, 1) inside the gap between two neighbouring
// z-slices from the K slices around the gap (K = 4: the slice before, the two of the gap, the slice after):
// its output is the 4-point cubic interpolation of those slices plus a learned correction. For every gap
// and every position this macro makes ONE (K + 1)-channel image [slice_m1, slice_0, slice_1, slice_2, dpm]
// (channels, not slices: deepImageJ maps ImageJ channels to the model's channel axis and slices to the batch
// axis; dpm is a constant plane holding z). For the gap between slices i and i+1 (1-based) the channels are
// slices i-1, i, i+1, i+2 of the ORIGINAL stack; at the first and last gaps, where i-1 or i+2 does not exist,
// the edge slice is repeated (first gap: 1, 1, 2, 3; last gap of n slices: n-2, n-1, n, n), exactly as
// `zaugnet predict` and cubic interpolation do. deepImageJ runs our BioImage.IO package on it, and the
// predicted slices are put between the two. With factor F the positions are z = j/F (j = 1 .. F-1), n slices
// become F * (n - 1) + 1 and the voxel depth is divided by F; with a list of positions (e.g. 0.25,0.5,0.75)
// each gap gets those slices and the voxel depth written is the mean spacing (a note is printed when the
// positions are not uniform). K is read from the package (its input channels).
//
// Same numbers as `zaugnet predict STACK -o OUT --model PACKAGE --factor F` (or `--z-positions ...`): the
// slices go to the model as 32-bit, the result is converted back to the input's bit depth (8/16-bit:
// rounded to nearest, clipped to the type's range, as the model's output is not clamped; 32-bit unchanged),
// and the original slices are copied unchanged. Slices whose width/height are not valid model sizes
// (32 + n*16) are mirror-padded at the bottom/right (as the network pads itself) and the prediction is
// cropped back.
//
// Needs: Fiji with deepImageJ (update site "DeepImageJ") and its PyTorch (TorchScript) engine, and a
// ZAugNet-C package as a FOLDER holding rdf.yaml (`zaugnet export final.pt -o MODEL_FOLDER`).
// Written for deepImageJ's current macro syntax (master / 3.1.x, 2025):
//   run("DeepImageJ Run", "model_path=... input_path=... output_folder=... display_output=null")
// Older releases need another call: change only zaRunDeepImageJ() below (see fiji_macros/README.md).
//
// Interactive: open a z-stack, Plugins > Macros > Run... > zaugnet_c.ijm, choose the model folder and
// the factor (or positions).
// Batch / scripted (key=value; [brackets] around values with spaces):
//   ImageJ-linux64 --headless -batch zaugnet_c.ijm "model=/models/zaugnet_c input=/data/stack.tif factor=3 output=/data/stack_x3.tif"
//   runMacro("zaugnet_c.ijm", "model=/models/zaugnet_c positions=0.25,0.5,0.75");  // current image
// Keys: model (required), factor (2, 3, 4, ...; default 2) or positions (comma-separated, increasing, in
//   (0, 1)), input (file; default: the current image), output (file to save the result; required in
//   -batch mode), output_id (the model's output tensor id; default: read from rdf.yaml), wait (seconds to
//   wait for deepImageJ's output file; default 60).

var ZA_MACRO = "zaugnet_c.ijm";
var ZA_TAG = "";
var ZA_TMP_IDS = newArray(0);
var ZA_TMP_DIR = "";
var ZA_SCALING = "";
var ZA_ORIG_SLICE = 0;
var ZA_ORIG_ID = 0;

zaMain();

function zaMain() {
    ZA_TAG = "zaugnet_tmp_" + d2s(getTime(), 0);
    ZA_SCALING = call("ij.process.ImageConverter.getDoScaling");
    startedInBatch = is("batch mode");
    noGui = zaNoGui();
    args = getArgument();
    if (args == "") {
        if (noGui)
            zaFail("no parameters; run it as  -batch zaugnet_c.ijm \"model=MODEL_FOLDER input=STACK.tif factor=3 output=OUT.tif\"");
        if (nImages == 0)
            zaFail("open a z-stack first (or give input=FILE as macro argument)");
        Dialog.create("ZAugNet-C z-slice interpolation (deepImageJ)");
        Dialog.addDirectory("Model folder (with rdf.yaml)", call("ij.Prefs.get", "zaugnet_c.model", ""));
        Dialog.addNumber("Factor (slices per gap + 1)", 2);
        Dialog.addString("Positions in (0, 1), optional", "", 20);
        Dialog.addMessage("Positions (comma-separated, e.g. 0.25,0.5,0.75) replace the factor.\nEvery gap and position is run through deepImageJ as ONE image whose channels\nare the slices around the gap and the DPM.");
        Dialog.show();
        model = Dialog.getString();
        factorText = "" + Dialog.getNumber();
        positionsText = zaTrim(Dialog.getString());
        if (positionsText != "")
            factorText = "";
        input = ""; output = ""; outputId = ""; waitText = "60";
        call("ij.Prefs.set", "zaugnet_c.model", model);
    } else {
        zaCheckKeys(args, newArray("model", "factor", "positions", "input", "output", "output_id", "wait"));
        model = zaArg(args, "model", "");
        factorText = zaArg(args, "factor", "");
        positionsText = zaArg(args, "positions", "");
        input = zaArg(args, "input", "");
        output = zaArg(args, "output", "");
        outputId = zaArg(args, "output_id", "");
        waitText = zaArg(args, "wait", "60");
        if (noGui && output == "")
            zaFail("give output=FILE.tif: without ImageJ's window (-batch, headless) the result cannot be shown");
    }
    if (factorText != "" && positionsText != "")
        zaFail("give only one of factor= and positions=");
    if (positionsText != "") {
        rel = zaPositions(positionsText);
        label = "_zaugnet_c_z" + rel.length;
    } else {
        if (factorText == "")
            factorText = "2";
        factor = zaInteger(factorText, "factor");
        if (factor < 2 || factor > 1024)
            zaFail("factor " + factorText + ": must be a whole number from 2 to 1024");
        rel = newArray(factor - 1);
        for (j = 1; j < factor; j++)
            rel[j - 1] = j / factor;
        label = "_zaugnet_c_x" + factor;
    }
    waitSec = parseFloat(waitText);
    if (isNaN(waitSec) || waitSec <= 0)
        zaFail("wait=" + waitText + ": expected a number of seconds > 0");

    model = zaModelFolder(model);
    rdf = File.openAsString(model + File.separator + "rdf.yaml");
    variant = zaRdfVariant(rdf);
    if (variant == "zaugnet")
        zaFail("the model in " + model + " is a ZAugNet package (input channels slice_0, slice_1, no dpm); use zaugnet.ijm");
    if (variant == "zaugnet+")
        zaFail("the model in " + model + " is a ZAugNet+ package (input channels slice_0, slice_1, dpm); use zaugnet_plus.ijm");
    K = zaRdfSlices(rdf);
    if (K < 4 || K % 2 != 0)
        zaFail("the model in " + model + " is not a ZAugNet-C package: its input names " + K + " slice channels (need an even number >= 4, then dpm)");
    if (outputId == "")
        outputId = zaRdfOutputId(rdf);
    zaCheckOutputPath(output, input);
    zaCheckDeepImageJ();

    setBatchMode(true);
    orig = zaOpenInput(input);
    zaCheckStack(orig);
    selectImage(orig);
    n = nSlices;
    w = getWidth();
    h = getHeight();
    bd = bitDepth();
    getVoxelSize(vw, vh, vd, unit);
    title = zaStripExtension(getTitle());
    zaMakeTempDir();

    // 32-bit working copy; each gap gets its new slices, each predicted from the K input slices around the gap
    work = zaDuplicate32(orig, ZA_TAG + "_work");
    step = rel.length + 1;
    newImage(ZA_TAG + "_result", "32-bit black", w, h, (n - 1) * step + 1);
    res = getImageID();
    zaTrack(res);
    for (i = 1; i <= n; i++)
        zaCopySlice(work, i, res, (i - 1) * step + 1);
    total = (n - 1) * rel.length;
    done = 0;
    for (i = 1; i < n; i++) {
        // slices i - K/2 + 1 .. i + K/2 (i-1, i, i+1, i+2 for K = 4), the edge slice repeated beyond the stack
        window = newArray(K);
        for (k = 0; k < K; k++)
            window[k] = minOf(maxOf(i - K / 2 + 1 + k, 1), n);
        for (j = 0; j < rel.length; j++) {
            showStatus("ZAugNet-C: gap " + i + "/" + (n - 1) + ", z = " + d2s(rel[j], 4));
            showProgress(done, total);
            pred = zaPredictWindow(work, window, rel[j], model, outputId, waitSec);
            zaCopySlice(pred, 1, res, (i - 1) * step + 2 + j);
            zaClose(pred);
            done++;
        }
    }
    zaClose(work);
    showProgress(1);
    uniform = true;
    for (j = 0; j < rel.length; j++)
        if (abs(rel[j] - (j + 1) / step) > 1e-9)
            uniform = false;
    if (!uniform)
        print(ZA_MACRO + ": note: non-uniform output spacing: the voxel depth written is the mean spacing");
    openedHere = false;
    if (input != "")
        openedHere = true;
    result = zaFinish(res, orig, n, step, bd, vw, vh, vd / step, unit, title + label, output, openedHere);
    zaCleanup();
    showStatus("ZAugNet-C: " + n + " -> " + ((n - 1) * step + 1) + " slices");
    if (!startedInBatch) {
        selectImage(result);
        setBatchMode(false);
    }
}

// ==== shared helpers: keep this block identical in zaugnet.ijm, zaugnet_plus.ijm and zaugnet_c.ijm (a test checks) ====

// The ONE place that calls deepImageJ. Current syntax (deepImageJ master / 3.1.x, snake_case keys); it writes
// "<input file name without extension>_<output tensor id>.tif" into output_folder. For another deepImageJ
// release change only this call (e.g. the camelCase keys modelPath= inputPath= outputFolder= displayOutput=).
function zaRunDeepImageJ(model, file, outDir) {
    run("DeepImageJ Run", "model_path=" + zaOpt(model) + " input_path=" + zaOpt(file) + " output_folder=" + zaOpt(outDir) + " display_output=null");
}

// A value for an ImageJ options string: [bracketed] where it contains a space.
function zaOpt(value) {
    if (indexOf(value, " ") >= 0)
        return "[" + value + "]";
    return value;
}

// The slice predicted between slices i and i+1 of the 32-bit stack src (ZAugNet+: at relative position z;
// z < 0: ZAugNet, no DPM channel), as a new 32-bit image of the same width and height.
function zaPredict(src, i, z, model, outputId, waitSec) {
    return zaPredictWindow(src, newArray(i, i + 1), z, model, outputId, waitSec);
}

// The slice predicted from the slices numbered in `slices` (1-based, repeats allowed) of the 32-bit stack src,
// made into ONE image with those slices as its channels, in that order, plus a constant DPM channel holding
// z when z >= 0 (z < 0: ZAugNet, no DPM). The new slice lies between slices[K/2 - 1] and slices[K/2]
// (K = slices.length). Returns a new 32-bit image of the same width and height.
function zaPredictWindow(src, slices, z, model, outputId, waitSec) {
    selectImage(src);
    w = getWidth();
    h = getHeight();
    channels = slices.length;
    if (z >= 0)
        channels++;
    newImage(ZA_TAG + "_pair", "32-bit black", w, h, channels);
    pair = getImageID();
    zaTrack(pair);
    for (k = 0; k < slices.length; k++)
        zaCopySlice(src, slices[k], pair, k + 1);
    selectImage(pair);
    if (z >= 0) {
        setSlice(channels);
        run("Set...", "value=" + d2s(z, 9) + " slice");
    }
    gap = "" + slices[floor(slices.length / 2) - 1] + "-" + slices[floor(slices.length / 2)];  // "" first, else "-" is arithmetic
    W = zaValidSize(w);
    H = zaValidSize(h);
    zaPadReflect(pair, w, h, W, H);
    Stack.setDimensions(channels, 1, 1);
    pairFile = ZA_TMP_DIR + "pair.tif";
    outDir = ZA_TMP_DIR + "out" + File.separator;
    zaEmptyFolder(outDir);
    saveAs("Tiff", pairFile);
    zaClose(pair);
    before = zaImageIds();
    zaRunDeepImageJ(model, pairFile, outDir);
    zaCloseNewImages(before);
    expected = "pair_" + outputId + ".tif";
    found = zaWaitForOutput(outDir, expected, waitSec);
    if (found == "")
        zaFail("deepImageJ wrote no output for slices " + gap + " (expected " + outDir + expected + " within " + waitSec + " s); see the Log window / console for deepImageJ's error");
    open(found);
    pred = getImageID();
    zaTrack(pred);
    if (getWidth() != W || getHeight() != H || nSlices != 1)
        zaFail("deepImageJ's output " + found + " is " + getWidth() + "x" + getHeight() + "x" + nSlices + ", expected one " + W + "x" + H + " image (is this a ZAugNet package?)");
    if (bitDepth() != 32)
        run("32-bit");
    if (W != w || H != h) {
        makeRectangle(0, 0, w, h);
        run("Crop");
        run("Select None");
    }
    ok = File.delete(found);
    ok = File.delete(pairFile);
    return pred;
}

// Smallest valid model size (32 + n*16) >= size.
function zaValidSize(size) {
    if (size <= 32)
        return 32;
    return 32 + 16 * floor((size - 32 + 15) / 16);
}

// Mirror-pad (reflect, edge not repeated) the bottom rows and right columns of every slice of image id
// from w x h to W x H: the network's own padding, so the prediction equals the unpadded one.
function zaPadReflect(id, w, h, W, H) {
    if (W == w && H == h)
        return;
    if (W - w >= w || H - h >= h)
        zaFail("slices of " + w + "x" + h + " pixels are too small for the model (at least 32x32)");
    selectImage(id);
    run("Canvas Size...", "width=" + W + " height=" + H + " position=Top-Left zero");
    for (s = 1; s <= nSlices; s++) {
        setSlice(s);
        for (y = h; y < H; y++) {
            src = 2 * (h - 1) - y;
            for (x = 0; x < w; x++)
                setPixel(x, y, getPixel(x, src));
        }
        for (x = w; x < W; x++) {
            src = 2 * (w - 1) - x;
            for (y = 0; y < H; y++)
                setPixel(x, y, getPixel(src, y));
        }
    }
}

// Path of deepImageJ's output in outDir (the expected name, else the only .tif there), once its size is
// stable; "" after waitSec seconds. Waiting also covers deepImageJ versions whose macro call returns early.
function zaWaitForOutput(outDir, expected, waitSec) {
    t0 = getTime();
    last = -1;
    while (true) {
        path = "";
        if (File.exists(outDir + expected)) {
            path = outDir + expected;
        } else {
            list = getFileList(outDir);
            tifs = newArray(0);
            for (k = 0; k < list.length; k++)
                if (endsWith(toLowerCase(list[k]), ".tif") || endsWith(toLowerCase(list[k]), ".tiff"))
                    tifs = Array.concat(tifs, list[k]);
            if (tifs.length == 1)
                path = outDir + tifs[0];
        }
        if (path != "") {
            size = File.length(path);
            if (size > 0 && size == last)
                return path;
            last = size;
        }
        if (getTime() - t0 > waitSec * 1000)
            return "";
        wait(50);
    }
}

// 32-bit result (all slices) -> the input's bit depth (rounded, clipped), original slices copied exactly,
// voxel depth set; saved to output if given. Returns the result's image ID.
function zaFinish(res, orig, n, step, bd, vw, vh, vdNew, unit, newTitle, output, closeOrig) {
    selectImage(res);
    if (bd == 8 || bd == 16) {
        setOption("ScaleConversions", false);
        run(bd + "-bit");
        setOption("ScaleConversions", ZA_SCALING == "true");
    }
    for (i = 1; i <= n; i++)
        zaCopySlice(orig, i, res, (i - 1) * step + 1);
    selectImage(orig);
    getMinAndMax(lo, hi);
    if (ZA_ORIG_SLICE > 0)
        setSlice(ZA_ORIG_SLICE);
    selectImage(res);
    setVoxelSize(vw, vh, vdNew, unit);
    setMinAndMax(lo, hi);
    setSlice(1);
    rename(newTitle);
    if (output != "") {
        saveAs("Tiff", output);
        print(ZA_MACRO + ": wrote " + output + " (" + nSlices + " slices, voxel depth " + d2s(vdNew, 6) + " " + unit + ")");
    }
    ZA_TMP_IDS = zaWithout(ZA_TMP_IDS, res);
    if (closeOrig)
        zaClose(orig);
    return res;
}

// Copy slice s of image src into slice d of image dst (same size and type: exact).
function zaCopySlice(src, s, dst, d) {
    selectImage(src);
    setSlice(s);
    selectImage(dst);
    setSlice(d);
    imageCalculator("Copy", dst, src);
}

function zaDuplicate32(id, newTitle) {
    selectImage(id);
    hadSelection = selectionType() >= 0;
    run("Select None");
    run("Duplicate...", "title=" + newTitle + " duplicate");
    dup = getImageID();
    zaTrack(dup);
    if (bitDepth() != 32)
        run("32-bit");
    if (hadSelection) {
        selectImage(id);
        run("Restore Selection");
    }
    return dup;
}

// IDs of all open images.
function zaImageIds() {
    ids = newArray(nImages);
    for (k = 1; k <= nImages; k++) {
        selectImage(k);
        ids[k - 1] = getImageID();
    }
    return ids;
}

// Close images opened since `before` (IDs) that this macro does not track: e.g. outputs a deepImageJ release
// displays although display_output=null.
function zaCloseNewImages(before) {
    now = zaImageIds();
    for (k = 0; k < now.length; k++) {
        known = false;
        for (j = 0; j < before.length; j++)
            if (now[k] == before[j])
                known = true;
        for (j = 0; j < ZA_TMP_IDS.length; j++)
            if (now[k] == ZA_TMP_IDS[j])
                known = true;
        if (!known) {
            selectImage(now[k]);
            close();
        }
    }
}

function zaOpenInput(input) {
    if (input == "") {
        if (nImages == 0)
            zaFail("no image open: give input=FILE or open a z-stack first");
        id = getImageID();
        ZA_ORIG_SLICE = getSliceNumber();
        ZA_ORIG_ID = id;
        return id;
    }
    if (!File.exists(input) || File.isDirectory(input))
        zaFail("input " + input + " not found (give a TIFF file)");
    open(input);
    id = getImageID();
    zaTrack(id);
    return id;
}

// A z-stack: one channel, one time point, at least 2 slices, 8/16/32-bit, at least 32x32 pixels.
function zaCheckStack(id) {
    selectImage(id);
    getDimensions(w, h, c, s, f);
    t = getTitle();
    if (bitDepth() == 24)
        zaFail(t + " is an RGB image; convert it (Image > Type) or split its colours first");
    if (c > 1)
        zaFail(t + " is not a z-stack: it has " + c + " channels; split them (Image > Color > Split Channels) and run on each");
    if (f > 1 && s == 1)
        zaFail(t + " is not a z-stack: it has " + f + " frames and 1 slice; if the frames are z-slices fix it in Image > Properties (slices=" + f + ", frames=1)");
    if (f > 1)
        zaFail(t + " is not a z-stack: it has " + f + " time points; run on each (Image > Duplicate... one frame)");
    if (s < 2)
        zaFail(t + " is not a z-stack: it has " + s + " slice (need at least 2)");
    if (w < 32 || h < 32)
        zaFail(t + ": slices of " + w + "x" + h + " pixels; the model needs at least 32x32");
    if (bitDepth() != 32 && calibrate(0) != 0)
        zaFail(t + " has a calibration function (e.g. signed 16-bit); convert it to 32-bit first");
}

// True without ImageJ's main window (ImageJ -batch, Fiji --headless, pyimagej headless): no dialogs.
function zaNoGui() {
    instance = call("ij.IJ.getInstance");
    if (instance == "" || instance == "0" || instance == "null")
        return true;
    return false;
}

function zaCheckDeepImageJ() {
    List.setCommands;
    found = List.get("DeepImageJ Run");
    List.clear();
    if (found == "")
        zaFail("deepImageJ is not installed: the command 'DeepImageJ Run' is missing. In Fiji: Help > Update... > Manage update sites > tick 'DeepImageJ', apply, restart Fiji");
}

// The model folder (holding rdf.yaml) from a folder or rdf.yaml path.
function zaModelFolder(model) {
    if (model == "")
        zaFail("no model folder given (model=FOLDER holding rdf.yaml)");
    while (lengthOf(model) > 1 && (endsWith(model, "/") || endsWith(model, "\\")))
        model = substring(model, 0, lengthOf(model) - 1);
    if (endsWith(model, "rdf.yaml") && !File.isDirectory(model))
        model = File.getParent(model);
    if (endsWith(toLowerCase(model), ".zip"))
        zaFail("model " + model + " is a zip file; deepImageJ takes the package as a FOLDER: unzip it, or export with `zaugnet export final.pt -o FOLDER`");
    if (!File.isDirectory(model))
        zaFail("model folder " + model + " not found");
    if (!File.exists(model + File.separator + "rdf.yaml"))
        zaFail("wrong model folder " + model + ": no rdf.yaml in it (export one with `zaugnet export final.pt -o FOLDER`)");
    return model;
}

// "zaugnet" / "zaugnet+" / "zaugnet-c" from the rdf's config (or its input channels), "" if unknown.
function zaRdfVariant(rdf) {
    lines = split(rdf, "\n");
    for (k = 0; k < lines.length; k++) {
        if (matches(lines[k], "^\\s+variant:\\s*['\"]?(zaugnet(\\+|-c)?)['\"]?\\s*$"))
            return replace(lines[k], "^\\s+variant:\\s*['\"]?(zaugnet(\\+|-c)?)['\"]?\\s*$", "$1");
    }
    for (k = 0; k < lines.length; k++) {
        if (matches(lines[k], "^\\s*-\\s*['\"]?dpm['\"]?\\s*$")) {
            if (zaRdfSlices(rdf) > 2)
                return "zaugnet-c";
            return "zaugnet+";
        }
    }
    return "";
}

// Number of image channels (slice_0, slice_1, slice_m1, slice_2, ...: not the dpm) of the rdf's input tensor.
function zaRdfSlices(rdf) {
    lines = split(rdf, "\n");
    count = 0;
    inside = false;
    for (k = 0; k < lines.length; k++) {
        line = replace(lines[k], "\r", "");
        if (matches(line, "^\\S.*"))
            inside = matches(line, "^inputs:\\s*$");
        else if (inside && matches(line, "^\\s*-\\s*['\"]?slice_m?[0-9]+['\"]?\\s*$"))
            count++;
    }
    return count;
}

// Id of the first output tensor in rdf.yaml (format 0.5 `id:`, 0.4 `name:`); "output" if not found.
// Only keys of the tensor itself count (not those of its axes): "- key:" at the list item's column or
// "  key:" two columns to its right.
function zaRdfOutputId(rdf) {
    lines = split(rdf, "\n");
    start = lines.length;
    for (k = lines.length - 1; k >= 0; k--)
        if (matches(lines[k], "^outputs:\\s*$"))
            start = k;
    indent = -1;
    for (k = start + 1; k < lines.length; k++) {
        line = replace(lines[k], "\r", "");
        if (matches(line, "^\\S.*"))
            return "output";
        if (indent < 0 && matches(line, "^\\s*-\\s.*"))
            indent = indexOf(line, "-");
        key = "";
        if (indent >= 0 && zaIndent(line) == indent && matches(line, "^\\s*-\\s+.*"))
            key = substring(line, indent + 1);
        else if (indent >= 0 && zaIndent(line) == indent + 2)
            key = line;
        key = replace(key, "^\\s+", "");
        if (matches(key, "^(id|name):\\s*\\S.*"))
            return replace(replace(key, "^(id|name):\\s*", ""), "['\"\\s]", "");
    }
    return "output";
}

function zaIndent(line) {
    k = 0;
    c = zaCharAt(line, k);
    while (c == " ") {
        k++;
        c = zaCharAt(line, k);
    }
    return k;
}

function zaCheckOutputPath(output, input) {
    if (output == "")
        return;
    if (input != "" && output == input)
        zaFail("output " + output + " is the input file; choose another output (inputs are never overwritten)");
    parent = File.getParent(output);
    if (parent != "" && !File.isDirectory(parent))
        zaFail("output folder " + parent + " does not exist");
}

// Refuse unknown keys in the macro argument (typos would otherwise fall back to defaults silently).
function zaCheckKeys(args, allowed) {
    k = 0;
    n = lengthOf(args);
    while (k < n) {
        c = zaCharAt(args, k);
        while (c == " ") {
            k++;
            c = zaCharAt(args, k);
        }
        if (k >= n)
            return;
        eq = indexOf(args, "=", k);
        if (eq < 0)
            zaFail("macro argument: expected key=value, got '" + substring(args, k) + "'");
        key = substring(args, k, eq);
        ok = false;
        for (a = 0; a < allowed.length; a++)
            if (key == allowed[a])
                ok = true;
        if (!ok)
            zaFail("macro argument: unknown key '" + key + "' (known: " + zaJoin(allowed) + ")");
        k = eq + 1;
        c = zaCharAt(args, k);
        if (c == "[") {
            endb = indexOf(args, "]", k);
            if (endb < 0)
                zaFail("macro argument: missing ] after " + key + "=");
            k = endb + 1;
        } else {
            sp = indexOf(args, " ", k);
            if (sp < 0)
                k = n;
            else
                k = sp;
        }
    }
}

// Character k of text, "" past its end. (The macro language evaluates both sides of && and ||, and a
// user function returning a string cannot be compared inline: assign its result first.)
function zaCharAt(text, k) {
    if (k >= lengthOf(text))
        return "";
    return substring(text, k, k + 1);
}

function zaArg(args, key, fallback) {
    return call("ij.Macro.getValue", args, key, fallback);
}

function zaJoin(items) {
    text = "";
    for (k = 0; k < items.length; k++) {
        if (k > 0)
            text = text + ", ";
        text = text + items[k];
    }
    return text;
}

function zaInteger(text, name) {
    v = parseInt(text);
    if (isNaN(v) || v != parseFloat(text))
        zaFail(name + "=" + text + ": expected a whole number");
    return v;
}

// Relative positions from "0.25,0.5,0.75": increasing, strictly between 0 and 1.
function zaPositions(text) {
    parts = split(text, ", ");
    rel = newArray(parts.length);
    for (j = 0; j < parts.length; j++) {
        rel[j] = parseFloat(parts[j]);
        if (isNaN(rel[j]) || rel[j] <= 0 || rel[j] >= 1)
            zaFail("positions=" + text + ": need numbers strictly between 0 and 1");
        if (j > 0) {
            if (rel[j] <= rel[j - 1])
                zaFail("positions=" + text + ": need increasing values");
        }
    }
    if (parts.length == 0)
        zaFail("positions=" + text + ": no positions");
    return rel;
}

function zaTrim(text) {
    return replace(replace(text, "^\\s+", ""), "\\s+$", "");
}

function zaStripExtension(name) {
    if (endsWith(toLowerCase(name), ".ome.tif"))
        return substring(name, 0, lengthOf(name) - 8);
    dot = lastIndexOf(name, ".");
    if (dot > 0)
        return substring(name, 0, dot);
    return name;
}

function zaMakeTempDir() {
    ZA_TMP_DIR = getDirectory("temp") + ZA_TAG + File.separator;
    File.makeDirectory(ZA_TMP_DIR);
    File.makeDirectory(ZA_TMP_DIR + "out");
    if (!File.isDirectory(ZA_TMP_DIR + "out"))
        zaFail("cannot create the temporary folder " + ZA_TMP_DIR);
}

function zaEmptyFolder(dir) {
    list = getFileList(dir);
    for (k = 0; k < list.length; k++)
        ok = File.delete(dir + list[k]);
}

function zaTrack(id) {
    ZA_TMP_IDS = Array.concat(ZA_TMP_IDS, id);
}

function zaWithout(ids, id) {
    out = newArray(0);
    for (k = 0; k < ids.length; k++)
        if (ids[k] != id)
            out = Array.concat(out, ids[k]);
    return out;
}

function zaClose(id) {
    if (isOpen(id)) {
        selectImage(id);
        close();
    }
    ZA_TMP_IDS = zaWithout(ZA_TMP_IDS, id);
}

// Close every image this macro made, delete its temporary folder, restore the conversion setting.
function zaCleanup() {
    ids = ZA_TMP_IDS;
    for (k = 0; k < ids.length; k++)
        zaClose(ids[k]);
    if (ZA_TMP_DIR != "" && File.isDirectory(ZA_TMP_DIR)) {
        zaEmptyFolder(ZA_TMP_DIR + "out" + File.separator);
        ok = File.delete(ZA_TMP_DIR + "out");
        zaEmptyFolder(ZA_TMP_DIR);
        ok = File.delete(ZA_TMP_DIR);
    }
    if (ZA_SCALING != "")
        setOption("ScaleConversions", ZA_SCALING == "true");
    if (ZA_ORIG_ID != 0 && ZA_ORIG_SLICE > 0) {
        if (isOpen(ZA_ORIG_ID)) {
            selectImage(ZA_ORIG_ID);
            setSlice(ZA_ORIG_SLICE);
        }
    }
}

// Clean up (no half-built result is left) and stop with a message.
function zaFail(message) {
    zaCleanup();
    exit(ZA_MACRO + ": error: " + message);
}

// ==== end of shared helpers ====
