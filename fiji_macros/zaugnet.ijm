// zaugnet.ijm - ZAugNet z-slice interpolation of a z-stack through deepImageJ.
//
// ZAugNet predicts the slice midway between two neighbouring z-slices. For a factor 2^k this macro runs
// k passes; in each pass every neighbouring pair becomes ONE 2-channel image [slice_0, slice_1], deepImageJ
// runs our BioImage.IO package on all of them, and the predicted slices are put between the two. n slices
// become factor * (n - 1) + 1, the voxel depth is divided by the factor.
//
// Needs: Fiji with deepImageJ (update site "DeepImageJ"; its first run downloads the Java engines, see
// fiji_macros/README.md) and a ZAugNet package as a FOLDER holding rdf.yaml, given by its ABSOLUTE path
// (`zaugnet export final.pt -o MODEL_FOLDER`).
// Written for deepImageJ's current macro syntax (master / 3.1.x, 2025), whose call returns once the outputs
// are written:
//   run("DeepImageJ Run", "model_path=... input_path=... output_folder=... display_output=null")
// Older releases need another call: change only zaRunDeepImageJ() below (see fiji_macros/README.md).
//
// ONE deepImageJ call carries many gaps: deepImageJ maps ImageJ channels to the model's channel axis and
// SLICES to its batch axis, so up to `batch` images (one per gap and position) go as the slices of one
// hyperstack whose channels are the model's input channels. deepImageJ loads the model once per call; a stack
// needs one call per pass (ZAugNet: one pass per factor of 2), more only when a pass has more than `batch`
// images (default: as many as fit in 256 MB of 32-bit input per call).
//
// Same numbers as `zaugnet predict STACK -o OUT --model PACKAGE --factor F`: the slices go to the model as
// 32-bit, ZAugNet's intermediate passes stay 32-bit, the result is converted back to the input's bit depth
// (8/16-bit: rounded to nearest, clipped to the type's range; 32-bit unchanged), and the original slices are
// copied unchanged. Slices whose width/height are not valid model sizes (32 + n*16) are mirror-padded at the
// bottom/right (as the network pads itself) and the predictions are cropped back.
//
// Interactive: open a z-stack, Plugins > Macros > Run... > zaugnet.ijm, choose the model folder and
// the factor.
// Batch / scripted (key=value; [brackets] around values with spaces):
//   ImageJ-linux64 --headless -batch zaugnet.ijm "model=/models/zaugnet input=/data/stack.tif factor=4 output=/data/stack_x4.tif"
//   runMacro("zaugnet.ijm", "model=/models/zaugnet factor=2");     // on the current image, result left open
// Keys: model (required; the package folder's absolute path),
//   factor (2, 4, 8, ...; default 2),
//   input (file; default: the current image), output (file to save the result; required in -batch mode),
//   batch (images, one per gap and position, per deepImageJ call; default: as many as fit in 256 MB),
//   output_id (the model's output tensor id; default: read from rdf.yaml), wait (seconds to wait for
//   deepImageJ's output after its call returned; default 0: deepImageJ 3.1 writes it before returning).
//
// GENERATED from fiji_macros/zaugnet.ijm.in by fiji_macros/generate_macros.py (zaugnet.ijm, zaugnet_plus.ijm and
// zaugnet_c.ijm differ only in this header and the three lines below): edit the template, then run
//   python fiji_macros/generate_macros.py

var ZA_MACRO = "zaugnet.ijm";
var ZA_VARIANT = "zaugnet";
var ZA_NAME = "ZAugNet";
var ZA_TAG = "";
var ZA_TMP_IDS = newArray(0);
var ZA_TMP_DIR = "";
var ZA_SCALING = "";
var ZA_ORIG_SLICE = 0;
var ZA_ORIG_ID = 0;
var ZA_CALLS = 0;
var ZA_BATCH_BYTES = 268435456;

zaMain();

function zaMain() {
    ZA_TAG = "zaugnet_tmp_" + d2s(getTime(), 0);
    ZA_SCALING = call("ij.process.ImageConverter.getDoScaling");
    startedInBatch = is("batch mode");
    noGui = zaNoGui();
    prefKey = replace(ZA_MACRO, "\\.ijm$", "") + ".model";
    keys = newArray("model", "factor", "input", "output", "output_id", "batch", "wait");
    if (ZA_VARIANT != "zaugnet")
        keys = Array.concat(keys, "positions");
    args = getArgument();
    positionsText = "";
    if (args == "") {
        if (noGui)
            zaFail("no parameters; run it as  -batch " + ZA_MACRO + " \"model=/path/to/MODEL_FOLDER input=STACK.tif factor=2 output=OUT.tif\"");
        if (nImages == 0)
            zaFail("open a z-stack first (or give input=FILE as macro argument)");
        Dialog.create(ZA_NAME + " z-slice interpolation (deepImageJ)");
        Dialog.addDirectory("Model folder (with rdf.yaml)", call("ij.Prefs.get", prefKey, ""));
        if (ZA_VARIANT == "zaugnet") {
            Dialog.addChoice("Factor (slices per gap + 1)", newArray("2", "4", "8", "16"), "2");
            Dialog.addMessage("Factor 2^k runs k passes; in each, every neighbouring pair of slices is ONE\n2-channel image, and all of them go to deepImageJ in one call (a few for large stacks).");
        } else {
            Dialog.addNumber("Factor (slices per gap + 1)", 2);
            Dialog.addString("Positions in (0, 1), optional", "", 20);
            Dialog.addMessage("Positions (comma-separated, e.g. 0.25,0.5,0.75) replace the factor.\nEvery gap and position is ONE image whose channels are the slices around\nthe gap and the DPM; all of them go to deepImageJ in one call (a few for large stacks).");
        }
        Dialog.show();
        model = Dialog.getString();
        if (ZA_VARIANT == "zaugnet") {
            factorText = Dialog.getChoice();
        } else {
            factorText = "" + Dialog.getNumber();
            positionsText = zaTrim(Dialog.getString());
            if (positionsText != "")
                factorText = "";
        }
        input = ""; output = ""; outputId = ""; batchText = ""; waitText = "0";
        call("ij.Prefs.set", prefKey, model);
    } else {
        zaCheckKeys(args, keys);
        model = zaArg(args, "model", "");
        factorText = zaArg(args, "factor", "");
        if (ZA_VARIANT != "zaugnet")
            positionsText = zaArg(args, "positions", "");
        input = zaArg(args, "input", "");
        output = zaArg(args, "output", "");
        outputId = zaArg(args, "output_id", "");
        batchText = zaArg(args, "batch", "");
        waitText = zaArg(args, "wait", "0");
        if (noGui && output == "")
            zaFail("give output=FILE.tif: without ImageJ's window (-batch, headless) the result cannot be shown");
    }

    // the positions z in (0, 1) of each gap's new slices; ZAugNet: midpoints, `passes` times
    passes = 1;
    if (factorText != "" && positionsText != "")
        zaFail("give only one of factor= and positions=");
    if (positionsText != "") {
        rel = zaPositions(positionsText);
        label = "_z" + rel.length;
    } else {
        if (factorText == "")
            factorText = "2";
        factor = zaInteger(factorText, "factor");
        if (ZA_VARIANT == "zaugnet") {
            passes = 0;
            f = factor;
            while (f > 1 && f % 2 == 0 && passes < 10) { f = f / 2; passes++; }
            if (factor < 2 || f != 1)
                zaFail("factor " + factorText + ": ZAugNet predicts midpoints only, so the factor must be 2, 4, 8, ... (1024 at most); use zaugnet_plus.ijm with a ZAugNet+ model for other factors or positions");
            rel = newArray(1);  // newArray(0.5) would be an array of 0.5 elements
            rel[0] = 0.5;
        } else {
            if (factor < 2 || factor > 1024)
                zaFail("factor " + factorText + ": must be a whole number from 2 to 1024");
            rel = newArray(factor - 1);
            for (j = 1; j < factor; j++)
                rel[j - 1] = j / factor;
        }
        label = "_x" + factor;
    }
    label = "_" + replace(replace(ZA_VARIANT, "\\+", "_plus"), "-", "_") + label;
    waitSec = parseFloat(waitText);
    if (isNaN(waitSec) || waitSec < 0)
        zaFail("wait=" + waitText + ": expected a number of seconds >= 0");
    perCall = 0;
    if (batchText != "") {
        perCall = zaInteger(batchText, "batch");
        if (perCall < 1)
            zaFail("batch=" + batchText + ": expected a whole number >= 1 (images per deepImageJ call)");
    }

    model = zaModelFolder(model);
    rdf = File.openAsString(model + File.separator + "rdf.yaml");
    variant = zaRdfVariant(rdf);
    K = 2;
    if (variant != ZA_VARIANT)
        zaWrongVariant(model, variant, zaRdfSlices(rdf));
    if (ZA_VARIANT == "zaugnet-c") {
        K = zaRdfSlices(rdf);
        if (K < 4 || K % 2 != 0)
            zaFail("the model in " + model + " is not a ZAugNet-C package: its input names " + K + " slice channels (need an even number >= 4, then dpm)");
    }
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
    W = zaValidSize(w);
    H = zaValidSize(h);
    channels = K;
    if (ZA_VARIANT != "zaugnet")
        channels = K + 1;
    if (perCall == 0)
        perCall = maxOf(1, floor(ZA_BATCH_BYTES / (4 * channels * W * H)));
    zaMakeTempDir();

    // 32-bit working copy; each pass puts rel.length new slices into every gap of the pass's stack, predicted
    // from the K slices around the gap (the edge slice repeated beyond the stack), in calls of <= perCall gaps
    cur = zaDuplicate32(orig, ZA_TAG + "_pass0");
    step = rel.length + 1;
    for (p = 1; p <= passes; p++) {
        selectImage(cur);
        m = nSlices;
        newImage(ZA_TAG + "_pass" + p, "32-bit black", w, h, (m - 1) * step + 1);
        nxt = getImageID();
        zaTrack(nxt);
        for (i = 1; i <= m; i++)
            zaCopySlice(cur, i, nxt, (i - 1) * step + 1);
        padded = zaPadded(cur, w, h, W, H);
        total = (m - 1) * rel.length;
        for (first = 0; first < total; first += perCall) {
            count = minOf(perCall, total - first);
            where = "gaps " + (floor(first / rel.length) + 1) + "-" + (floor((first + count - 1) / rel.length) + 1) + " of " + (m - 1);
            if (passes > 1)
                where = where + " (pass " + p + "/" + passes + ")";
            showStatus(ZA_NAME + ": deepImageJ on " + where);
            showProgress(first, total);
            pred = zaPredictGaps(padded, m, K, channels, rel, first, count, w, h, W, H, model, outputId, waitSec, where);
            for (q = 0; q < count; q++) {
                item = first + q;
                i = floor(item / rel.length) + 1;
                j = item % rel.length;
                zaCopySlice(pred, q + 1, nxt, (i - 1) * step + 2 + j);
            }
            zaClose(pred);
        }
        if (padded != cur)
            zaClose(padded);
        zaClose(cur);
        cur = nxt;
    }
    showProgress(1);
    F = step;
    for (p = 2; p <= passes; p++)
        F = F * step;
    uniform = true;
    for (j = 0; j < rel.length; j++)
        if (abs(rel[j] - (j + 1) / step) > 1e-9)
            uniform = false;
    if (!uniform)
        print(ZA_MACRO + ": note: non-uniform output spacing: the voxel depth written is the mean spacing");
    openedHere = false;
    if (input != "")
        openedHere = true;
    result = zaFinish(cur, orig, n, F, bd, vw, vh, vd / F, unit, title + label, output, openedHere);
    zaCleanup();
    print(ZA_MACRO + ": " + n + " -> " + ((n - 1) * F + 1) + " slices in " + ZA_CALLS + " deepImageJ call(s)");
    showStatus(ZA_NAME + ": " + n + " -> " + ((n - 1) * F + 1) + " slices, " + ZA_CALLS + " deepImageJ call(s)");
    if (!startedInBatch) {
        selectImage(result);
        setBatchMode(false);
    }
}

// The ONE place that calls deepImageJ. Current syntax (deepImageJ master / 3.1.x, snake_case keys); it writes
// "<input file name without extension>_<output tensor id>.tif" into output_folder before it returns. For
// another deepImageJ release change only this call (e.g. the camelCase keys modelPath= inputPath=
// outputFolder= displayOutput=).
function zaRunDeepImageJ(model, file, outDir) {
    run("DeepImageJ Run", "model_path=" + zaOpt(model) + " input_path=" + zaOpt(file) + " output_folder=" + zaOpt(outDir) + " display_output=null");
}

// A value for an ImageJ options string: [bracketed] where it contains a space.
function zaOpt(value) {
    if (indexOf(value, " ") >= 0)
        return "[" + value + "]";
    return value;
}

// Predictions for `count` (gap, position) items, item first .. first + count - 1 in gap-major order (item t:
// gap floor(t / rel.length) + 1, position rel[t % rel.length]), from ONE deepImageJ call. src: the pass's
// 32-bit stack of m slices, padded to W x H. Each item is one batch element: `channels` ImageJ channels, the
// K slices around its gap (slices i - K/2 + 1 .. i + K/2, the edge slice repeated beyond the stack) and, except
// for ZAugNet, a constant DPM plane holding z; the items are the hyperstack's slices (the batch axis).
// Returns a new 32-bit stack of `count` w x h slices, in item order.
function zaPredictGaps(src, m, K, channels, rel, first, count, w, h, W, H, model, outputId, waitSec, where) {
    newImage(ZA_TAG + "_gaps", "32-bit black", W, H, channels * count);
    img = getImageID();
    zaTrack(img);
    for (q = 0; q < count; q++) {
        item = first + q;
        i = floor(item / rel.length) + 1;
        j = item % rel.length;
        for (k = 0; k < K; k++)
            zaCopySlice(src, minOf(maxOf(i - K / 2 + 1 + k, 1), m), img, q * channels + k + 1);
        if (channels > K) {
            selectImage(img);
            setSlice(q * channels + channels);
            run("Set...", "value=" + d2s(rel[j], 9) + " slice");
        }
    }
    selectImage(img);
    Stack.setDimensions(channels, count, 1);
    file = ZA_TMP_DIR + "gaps.tif";
    outDir = ZA_TMP_DIR + "out" + File.separator;
    zaEmptyFolder(outDir);
    saveAs("Tiff", file);
    zaClose(img);
    before = zaImageIds();
    exceptions = zaCountExceptionWindows();
    logBefore = lengthOf(getInfo("log"));
    zaRunDeepImageJ(model, file, outDir);
    ZA_CALLS++;
    zaCloseNewImages(before);
    expected = "gaps_" + outputId + ".tif";
    found = zaOutputFile(outDir, expected);
    if (found == "") {
        // deepImageJ reports a failure as a Java exception: ImageJ shows it in an "Exception" window (with its
        // main window) or prints it (without: -batch, headless; also the console of Fiji), and the macro goes on
        failure = zaNewException(exceptions, logBefore);
        if (failure != "")
            zaFail("deepImageJ failed on " + where + ": " + failure);
        if (waitSec > 0)
            found = zaWaitForOutput(outDir, expected, waitSec);
        if (found == "" && waitSec > 0)
            zaFail("deepImageJ wrote no output for " + where + " within " + waitSec + " s after its call returned (expected " + outDir + expected + "); its error is in the console (Fiji: Window > Console) or the Log window");
        if (found == "")
            zaFail("deepImageJ failed on " + where + ": its call returned without writing " + outDir + expected + "; its error is in the console (Fiji: Window > Console) or the Log window. (Only for a deepImageJ build whose call returns before its output is written, give wait=SECONDS.)");
    }
    open(found);
    pred = getImageID();
    zaTrack(pred);
    getDimensions(ow, oh, oc, os, of);
    if (ow != W || oh != H || oc != 1 || os * of != count)
        zaFail("deepImageJ's output " + found + " is " + ow + "x" + oh + " with " + oc + " channel(s) and " + (os * of) + " image(s), expected " + count + " image(s) of " + W + "x" + H + ", one per gap (is this a ZAugNet package?)");
    if (of > 1)
        Stack.setDimensions(1, count, 1);
    if (bitDepth() != 32)
        run("32-bit");
    if (W != w || H != h) {
        makeRectangle(0, 0, w, h);
        run("Crop");
        run("Select None");
    }
    ok = File.delete(found);
    ok = File.delete(file);
    return pred;
}

// Number of open "Exception" windows (ImageJ shows an exception thrown by a command in one).
function zaCountExceptionWindows() {
    titles = getList("window.titles");
    count = 0;
    for (k = 0; k < titles.length; k++)
        if (titles[k] == "Exception")
            count++;
    return count;
}

// The exception's line from a new "Exception" window or from text added to the Log window since logBefore;
// "" if there is none.
function zaNewException(exceptionsBefore, logBefore) {
    text = "";
    if (zaCountExceptionWindows() > exceptionsBefore) {
        selectWindow("Exception");
        text = getInfo("window.contents");
    } else {
        logText = getInfo("log");
        if (lengthOf(logText) > logBefore)
            text = substring(logText, logBefore);
    }
    lines = split(text, "\n");
    for (k = 0; k < lines.length; k++) {
        line = zaTrim(lines[k]);
        if (matches(line, "^[A-Za-z_$][\\w.$]*(Exception|Error)(:.*)?$")) {
            if (lengthOf(line) > 400)
                line = substring(line, 0, 400) + " ...";
            where = "the console";
            if (zaCountExceptionWindows() > exceptionsBefore)
                where = "its Exception window";
            return line + " (the whole error is in " + where + ")";
        }
    }
    return "";
}

// Path of deepImageJ's output in outDir: the expected name, else the only .tif there (a release naming it
// differently); "" if there is none.
function zaOutputFile(outDir, expected) {
    if (File.exists(outDir + expected))
        return outDir + expected;
    list = getFileList(outDir);
    tifs = newArray(0);
    for (k = 0; k < list.length; k++)
        if (endsWith(toLowerCase(list[k]), ".tif") || endsWith(toLowerCase(list[k]), ".tiff"))
            tifs = Array.concat(tifs, list[k]);
    if (tifs.length == 1)
        return outDir + tifs[0];
    return "";
}

// zaOutputFile once its size is stable; "" after waitSec seconds (deepImageJ builds whose call returns early).
function zaWaitForOutput(outDir, expected, waitSec) {
    t0 = getTime();
    last = -1;
    while (true) {
        path = zaOutputFile(outDir, expected);
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

// Smallest valid model size (32 + n*16) >= size.
function zaValidSize(size) {
    if (size <= 32)
        return 32;
    return 32 + 16 * floor((size - 32 + 15) / 16);
}

// src itself when its slices are W x H already, else a new copy mirror-padded to W x H (see zaPadReflect).
function zaPadded(src, w, h, W, H) {
    if (W == w && H == h)
        return src;
    selectImage(src);
    run("Duplicate...", "title=" + ZA_TAG + "_padded duplicate");
    id = getImageID();
    zaTrack(id);
    zaPadReflect(id, w, h, W, H);
    return id;
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

// True for an absolute path (Windows: with a drive letter or a \\server share, as Java's File.isAbsolute).
function zaIsAbsolute(path) {
    if (startsWith(getInfo("os.name"), "Windows"))
        return matches(path, "^([A-Za-z]:[\\\\/]|\\\\\\\\).*");
    return startsWith(path, "/");
}

// The model folder (holding rdf.yaml) from a folder or rdf.yaml path, which must be absolute: deepImageJ
// looks for a relative model_path in Fiji.app/models and then by name on bioimage.io, not in this folder.
function zaModelFolder(model) {
    if (model == "")
        zaFail("no model folder given (model=FOLDER holding rdf.yaml, its absolute path)");
    while (lengthOf(model) > 1 && (endsWith(model, "/") || endsWith(model, "\\")))
        model = substring(model, 0, lengthOf(model) - 1);
    if (!zaIsAbsolute(model)) {
        hint = "";
        cwd = getDirectory("cwd");
        if (cwd != "" && File.exists(cwd + model))
            hint = " (here: model=" + zaOpt(cwd + model) + ")";
        zaFail("model=" + model + " is a relative path: deepImageJ would look for it in Fiji.app/models and then on bioimage.io, not in the current folder; give the absolute path of the package folder" + hint);
    }
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

// Stop: the package in `model` is of another variant (K: its slice channels) than this macro's.
function zaWrongVariant(model, variant, K) {
    if (variant == "zaugnet")
        zaFail("the model in " + model + " is a ZAugNet package (input channels slice_0, slice_1, no dpm); use zaugnet.ijm");
    if (variant == "zaugnet+")
        zaFail("the model in " + model + " is a ZAugNet+ package (input channels slice_0, slice_1, dpm); use zaugnet_plus.ijm");
    if (variant == "zaugnet-c")
        zaFail("the model in " + model + " is a ZAugNet-C package (input channels: " + K + " slices and dpm); use zaugnet_c.ijm");
    zaFail("the model in " + model + " is not a " + ZA_NAME + " package (its rdf.yaml names no variant and no dpm input channel)");
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
    if (zaRdfSlices(rdf) == 2)
        return "zaugnet";
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
