// zs_deconvnet.ijm - ZS-DeconvNet 3D denoising and deconvolution of a z-stack through deepImageJ, in ONE call.
//
// ZS-DeconvNet (a two-stage 3D network, denoiser then deconvolver, trained on the stack itself with
// `zaugnet deconv train`) takes the whole z-stack as ONE 3D tensor (batch, channel, z, y, x): deepImageJ maps
// the stack's SLICES to the model's z axis, so one deepImageJ call deconvolves the whole stack (deepImageJ
// tiles it itself where it does not fit in memory). The package writes two outputs, `deconvolved` and
// `denoised`; this macro keeps the deconvolved stack (and, with denoised=FILE or the dialog's tick, the
// denoised one), 32-bit, with the input's voxel size.
//
// Needs: Fiji with deepImageJ (update site "DeepImageJ"; its first run downloads the Java engines, see
// fiji_macros/README.md) and a ZS-DeconvNet package as a FOLDER holding rdf.yaml, given by its ABSOLUTE path
// (`zaugnet export RUN_DIR/final.pt -o MODEL_FOLDER` on a checkpoint of `zaugnet deconv train`).
// Written for deepImageJ's current macro syntax (master / 3.1.x, 2025), whose call returns once the outputs
// are written:
//   run("DeepImageJ Run", "model_path=... input_path=... output_folder=... display_output=null")
// Older releases need another call: change only zaRunDeepImageJ() below (see fiji_macros/README.md).
//
// Same numbers as `zaugnet deconv predict STACK -o OUT --model RUN_DIR/final.pt` (the checkpoint the package
// was exported from) where deepImageJ runs the stack as one tile: the stack goes to the model as 32-bit; the
// package normalises with its FIXED affine (scale_linear) and undoes it on both outputs, and its halo (4
// slices, 16 pixels) is the zero margin zaugnet puts around the volume. The results stay 32-bit, in the
// input's intensity units (no stretch, no 16-bit rescaling).
//
// Interactive: open a z-stack (one channel), Plugins > Macros > Run... > zs_deconvnet.ijm, choose the model folder.
// Batch / scripted (key=value; [brackets] around values with spaces):
//   ImageJ-linux64 --headless -batch zs_deconvnet.ijm "model=/models/zs_deconvnet input=/data/nucleus.tif output=/data/nucleus_deconv.tif"
//   runMacro("zs_deconvnet.ijm", "model=/models/zs_deconvnet denoised=/data/nucleus_denoised.tif");  // current image
// Keys: model (required; the package folder's absolute path),
//   input (file; default: the current image), output (file to save the deconvolved stack; required in -batch
//   mode), denoised (file to save the denoised stack too; default: not kept), wait (seconds to wait for
//   deepImageJ's outputs after its call returned; default 0: deepImageJ 3.1 writes them before returning).
//
// GENERATED from fiji_macros/zs_deconvnet.ijm.in by fiji_macros/generate_macros.py, which copies in the helper
// functions below the marker from fiji_macros/zaugnet.ijm.in (ImageJ macros cannot include files): edit the
// templates, then run
//   python fiji_macros/generate_macros.py

var ZA_MACRO = "zs_deconvnet.ijm";
var ZA_NAME = "ZS-DeconvNet";
var ZA_FAMILY = "zs-deconvnet-3d";
var ZA_TAG = "";
var ZA_TMP_IDS = newArray(0);
var ZA_TMP_DIR = "";
var ZA_SCALING = "";
var ZA_ORIG_SLICE = 0;
var ZA_ORIG_ID = 0;
var ZA_CALLS = 0;

zdMain();

function zdMain() {
    ZA_TAG = "zaugnet_tmp_" + d2s(getTime(), 0);
    ZA_SCALING = call("ij.process.ImageConverter.getDoScaling");
    startedInBatch = is("batch mode");
    noGui = zaNoGui();
    prefKey = "zs_deconvnet.model";
    keys = newArray("model", "input", "output", "denoised", "wait");
    args = getArgument();
    keepDenoised = false;
    if (args == "") {
        if (noGui)
            zaFail("no parameters; run it as  -batch " + ZA_MACRO + " \"model=/path/to/MODEL_FOLDER input=STACK.tif output=OUT.tif\"");
        if (nImages == 0)
            zaFail("open a z-stack first (or give input=FILE as macro argument)");
        Dialog.create(ZA_NAME + " 3D deconvolution (deepImageJ)");
        Dialog.addDirectory("Model folder (with rdf.yaml)", call("ij.Prefs.get", prefKey, ""));
        Dialog.addCheckbox("Also keep the denoised stack", false);
        Dialog.addMessage("The whole stack goes to deepImageJ in ONE call (its slices are the model's z axis).");
        Dialog.show();
        model = Dialog.getString();
        keepDenoised = Dialog.getCheckbox();
        input = ""; output = ""; denoised = ""; waitText = "0";
        call("ij.Prefs.set", prefKey, model);
    } else {
        zaCheckKeys(args, keys);
        model = zaArg(args, "model", "");
        input = zaArg(args, "input", "");
        output = zaArg(args, "output", "");
        denoised = zaArg(args, "denoised", "");
        waitText = zaArg(args, "wait", "0");
        if (denoised != "")
            keepDenoised = true;
        if (noGui && output == "")
            zaFail("give output=FILE.tif: without ImageJ's window (-batch, headless) the result cannot be shown");
    }
    waitSec = parseFloat(waitText);
    if (isNaN(waitSec) || waitSec < 0)
        zaFail("wait=" + waitText + ": expected a number of seconds >= 0");

    model = zaModelFolder(model);
    rdf = File.openAsString(model + File.separator + "rdf.yaml");
    if (!zdIsDeconvPackage(rdf))
        zaFail("the model in " + model + " is not a ZS-DeconvNet package (its rdf.yaml has no config.zaugnet.family: " + ZA_FAMILY + "); ZAugNet packages take zaugnet.ijm, zaugnet_plus.ijm or zaugnet_c.ijm");
    zaCheckOutputPath(output, input);
    zaCheckOutputPath(denoised, input);
    if (output != "" && output == denoised)
        zaFail("output and denoised name the same file " + output);
    zaCheckDeepImageJ();

    setBatchMode(true);
    orig = zaOpenInput(input);
    zdCheckStack(orig);
    selectImage(orig);
    n = nSlices;
    w = getWidth();
    h = getHeight();
    getVoxelSize(vw, vh, vd, unit);
    title = zaStripExtension(getTitle());
    zaMakeTempDir();

    // the whole stack as ONE 32-bit z-stack file (slices = the model's z axis), ONE deepImageJ call
    raw = zaDuplicate32(orig, "raw");
    selectImage(raw);
    Stack.setDimensions(1, n, 1);
    file = ZA_TMP_DIR + "raw.tif";
    outDir = ZA_TMP_DIR + "out" + File.separator;
    zaEmptyFolder(outDir);
    saveAs("Tiff", file);
    zaClose(raw);
    showStatus(ZA_NAME + ": deepImageJ on " + n + " slices of " + w + "x" + h);
    before = zaImageIds();
    exceptions = zaCountExceptionWindows();
    logBefore = lengthOf(getInfo("log"));
    zaRunDeepImageJ(model, file, outDir);
    ZA_CALLS++;
    zaCloseNewImages(before);
    deconvolved = zdOutput(outDir, "raw_deconvolved.tif", exceptions, logBefore, waitSec, n, w, h);
    result = zdFinish(deconvolved, vw, vh, vd, unit, title + "_deconvolved", output);
    kept = "";
    if (keepDenoised) {
        den = zdOutput(outDir, "raw_denoised.tif", exceptions, logBefore, waitSec, n, w, h);
        den = zdFinish(den, vw, vh, vd, unit, title + "_denoised", denoised);
        kept = " and the denoised stack";
        if (denoised != "" || noGui)
            zaClose(den);
    }
    ok = File.delete(file);
    if (input != "")
        zaClose(orig);
    if (output != "" && noGui)
        zaClose(result);
    zaCleanup();
    print(ZA_MACRO + ": deconvolved " + n + " slices of " + w + "x" + h + kept + " in " + ZA_CALLS + " deepImageJ call(s)");
    showStatus(ZA_NAME + ": " + n + " slices deconvolved in " + ZA_CALLS + " deepImageJ call(s)");
    if (!startedInBatch) {
        if (isOpen(result))
            selectImage(result);
        setBatchMode(false);
    }
}

// True when the rdf is a ZS-DeconvNet package's: its config.zaugnet names the family.
function zdIsDeconvPackage(rdf) {
    lines = split(rdf, "\n");
    for (k = 0; k < lines.length; k++)
        if (matches(replace(lines[k], "\r", ""), "^\\s+family:\\s*['\"]?" + ZA_FAMILY + "['\"]?\\s*$"))
            return true;
    return false;
}

// A z-stack for the model: one channel, one time point, 8/16/32-bit, no calibration function.
function zdCheckStack(id) {
    selectImage(id);
    getDimensions(w, h, c, s, f);
    t = getTitle();
    if (bitDepth() == 24)
        zaFail(t + " is an RGB image; convert it (Image > Type) or split its colours first");
    if (c > 1)
        zaFail(t + " has " + c + " channels; split them (Image > Color > Split Channels) and run on the channel the model was trained on");
    if (f > 1 && s == 1)
        zaFail(t + " has " + f + " frames and 1 slice; if the frames are z-slices fix it in Image > Properties (slices=" + f + ", frames=1)");
    if (f > 1)
        zaFail(t + " has " + f + " time points; run on each (Image > Duplicate... one frame)");
    if (bitDepth() != 32 && calibrate(0) != 0)
        zaFail(t + " has a calibration function (e.g. signed 16-bit); convert it to 32-bit first");
}

// deepImageJ's output `expected` in outDir, opened as a 32-bit z-stack of n slices of w x h (tracked); stops with
// deepImageJ's error (or what is missing) when there is none.
function zdOutput(outDir, expected, exceptions, logBefore, waitSec, n, w, h) {
    found = "";
    if (File.exists(outDir + expected))
        found = outDir + expected;
    if (found == "") {
        // deepImageJ reports a failure as a Java exception: ImageJ shows it in an "Exception" window (with its
        // main window) or prints it (without: -batch, headless; also the console of Fiji), and the macro goes on
        failure = zaNewException(exceptions, logBefore);
        if (failure != "")
            zaFail("deepImageJ failed on the stack: " + failure);
        if (waitSec > 0)
            found = zaWaitForOutput(outDir, expected, waitSec);
        if (found == "" && waitSec > 0)
            zaFail("deepImageJ wrote no output within " + waitSec + " s after its call returned (expected " + outDir + expected + "); its error is in the console (Fiji: Window > Console) or the Log window");
        if (found == "")
            zaFail("deepImageJ failed on the stack: its call returned without writing " + outDir + expected + "; its error is in the console (Fiji: Window > Console) or the Log window. (Only for a deepImageJ build whose call returns before its output is written, give wait=SECONDS.)");
    }
    open(found);
    id = getImageID();
    zaTrack(id);
    getDimensions(ow, oh, oc, os, of);
    if (ow != w || oh != h || oc != 1 || os * of != n)
        zaFail("deepImageJ's output " + found + " is " + ow + "x" + oh + " with " + oc + " channel(s) and " + (os * of) + " slice(s), expected " + n + " slice(s) of " + w + "x" + h + " (is this a ZS-DeconvNet package?)");
    if (of > 1)
        Stack.setDimensions(1, n, 1);
    if (bitDepth() != 32)
        run("32-bit");
    ok = File.delete(found);
    return id;
}

// The result `id` with the input's voxel size, named newTitle, its display range its own; saved to `path`
// unless that is ""; no longer a temporary image.
function zdFinish(id, vw, vh, vd, unit, newTitle, path) {
    selectImage(id);
    setVoxelSize(vw, vh, vd, unit);
    setSlice(1);
    resetMinAndMax();
    rename(newTitle);
    if (path != "") {
        saveAs("Tiff", path);
        print(ZA_MACRO + ": wrote " + path + " (" + nSlices + " slices, 32-bit, voxel size " + d2s(vw, 6) + " x " + d2s(vh, 6) + " x " + d2s(vd, 6) + " " + unit + ")");
    }
    ZA_TMP_IDS = zaWithout(ZA_TMP_IDS, id);
    return id;
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
