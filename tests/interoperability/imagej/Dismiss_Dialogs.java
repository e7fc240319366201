/*
 * TEST-ONLY ImageJ plugin: "Dismiss Dialogs". With ImageJ's main window a macro error or exit("message")
 * shows a modal message dialog that waits for a click, which nobody gives under Xvfb. Run once from a test's
 * macro, this starts a daemon thread that writes the text of every ImageJ message dialog to the Log window,
 *
 *   Dismiss Dialogs (test): <dialog title>: <message>
 *
 * and closes it, so the macro goes on (a macro that called another with runMacro gets "[aborted]" back) and
 * the test can read the message. It changes nothing else.
 *
 * Compile: javac -cp /usr/share/java/ij.jar -d DIR/plugins Dismiss_Dialogs.java
 */

import ij.IJ;
import ij.gui.MessageDialog;
import ij.plugin.PlugIn;

import java.awt.Dialog;
import java.awt.EventQueue;
import java.awt.Window;
import java.lang.reflect.Field;
import java.util.Collections;
import java.util.Set;
import java.util.WeakHashMap;

public class Dismiss_Dialogs implements PlugIn {

    private static Thread watcher;

    @Override
    public synchronized void run(String arg) {
        if (watcher != null)
            return;
        Set<Window> seen = Collections.newSetFromMap(new WeakHashMap<>());
        watcher = new Thread(() -> {
            while (true) {
                for (Window window : Window.getWindows()) {
                    if (window instanceof MessageDialog && window.isShowing() && seen.add(window)) {
                        MessageDialog dialog = (MessageDialog) window;
                        IJ.log("Dismiss Dialogs (test): " + dialog.getTitle() + ": " + text(dialog));
                        EventQueue.invokeLater(dialog::dispose);
                    }
                }
                try {
                    Thread.sleep(100);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "Dismiss Dialogs (test)");
        watcher.setDaemon(true);
        watcher.start();
    }

    /** The dialog's message: the lines of its MultiLineLabel (package-private fields of ImageJ 1). */
    private static String text(Dialog dialog) {
        try {
            Field label = MessageDialog.class.getDeclaredField("label");
            label.setAccessible(true);
            Object multiLine = label.get(dialog);
            Field lines = multiLine.getClass().getDeclaredField("lines");
            lines.setAccessible(true);
            return String.join(" / ", (String[]) lines.get(multiLine));
        } catch (ReflectiveOperationException | RuntimeException e) {
            return "(text not readable: " + e + ")";
        }
    }
}
