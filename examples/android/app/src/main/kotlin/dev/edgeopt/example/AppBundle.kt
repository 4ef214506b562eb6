package dev.edgeopt.example

import android.content.Context
import dev.edgeopt.core.BundleFiles
import dev.edgeopt.core.BundleVerifier
import dev.edgeopt.core.Feeds
import dev.edgeopt.core.Manifest
import dev.edgeopt.core.Opened
import dev.edgeopt.core.Tokenizer
import java.io.InputStream

/** The bundle shipped in the APK's assets under `bundle/`. */
class AssetBundle(private val context: Context, private val root: String = "bundle") : BundleFiles {
    override fun open(path: String): InputStream = context.assets.open("$root/$path")
    override fun exists(path: String): Boolean = try {
        open(path).close(); true
    } catch (e: java.io.IOException) {
        false
    }
}

/** The verified bundle and its session, opened once for every screen. */
class LoadedBundle(val manifest: Manifest, val tokenizer: Tokenizer?, val opened: Opened) {
    /** What every screen shows: which provider the session got, and why not the others. */
    val providerLine: String
        get() = buildString {
            append("provider: ${opened.session.provider}")
            if (opened.attempt.disableCpuFallback) append(" (whole graph, CPU fallback off)")
            opened.skipped.forEach { append("\nskipped ${it.attempt.label}: ${it.reason}") }
        }

    companion object {
        @Volatile private var loaded: LoadedBundle? = null

        fun get(context: Context, threads: Int = 4): LoadedBundle = loaded ?: synchronized(this) {
            loaded ?: load(context.applicationContext, threads).also { loaded = it }
        }

        private fun load(context: Context, threads: Int): LoadedBundle {
            val files = AssetBundle(context)
            val manifest = BundleVerifier.load(files) // version, parity and every sha256
            val model = files.open(manifest.model).use { it.readBytes() }
            // Decoders ship a byte-level BPE tokenizer, which core does not port: the
            // generation screen takes token ids (or text, for a text-in bundle).
            val tokenizer = if (manifest.task == "text-generation") null else Feeds.tokenizerFor(manifest, files)
            return LoadedBundle(manifest, tokenizer, OrtModelSession.open(manifest, model, threads))
        }
    }
}
