package dev.edgeopt.core

import java.io.File
import java.io.InputStream
import java.security.MessageDigest

/** A bundle problem an app must not ship past: the message says what and why. */
class BundleException(message: String) : Exception(message)

/** One graph input or output as the manifest lists it; a string in [shape] is a dynamic axis. */
data class TensorSpec(val name: String, val dtype: String, val shape: List<Any?>) {
    /** A text-in bundle (tokenizer inside the graph) takes strings here. */
    val isText: Boolean get() = dtype == "object" || dtype == "str" || dtype == "string"
}

data class FileEntry(val sha256: String, val bytes: Long)

data class TokenizerInfo(val files: List<String>, val padTokenId: Int, val truncationSide: String)

data class FixedShape(val batch: Int, val sequence: Int)

/** manifest.json of an edgeopt bundle (version 1), the fields an app acts on. */
data class Manifest(
    val task: String,
    val target: String,
    val model: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val labelNames: List<String>?,
    val pooling: String?,
    val normalized: Boolean?,
    val maxSequenceLength: Int?,
    val providers: List<String>,
    val providerOptions: Map<String, Map<String, String>>,
    val cpuEpFallback: Boolean,
    val fixedInputShape: FixedShape?,
    val disabledOptimizers: List<String>,
    val tokenizer: TokenizerInfo?,
    val files: Map<String, FileEntry>,
    val parity: String,
    val decoder: Map<String, Any?>?,
) {
    /** Token-in (the app tokenizes) or text-in (the graph does). */
    val textInput: Boolean get() = inputs.any { it.isText }

    companion object {
        const val VERSION = 1

        @Suppress("UNCHECKED_CAST")
        fun parse(text: String): Manifest {
            val m = try {
                Json.parse(text) as Map<String, Any?>
            } catch (e: Exception) {
                throw BundleException("manifest.json is not valid JSON (${e.message}); recompile the bundle")
            }
            val version = m.int("manifest_version")
            if (version != VERSION) {
                throw BundleException("manifest_version $version is not $VERSION; this app reads version $VERSION")
            }
            fun specs(key: String) = (m.list(key) ?: throw BundleException("manifest has no $key")).map {
                val s = it as Map<String, Any?>
                TensorSpec(s.str("name")!!, s.str("dtype")!!, s.list("shape") ?: emptyList())
            }
            val files = (m.obj("files") ?: throw BundleException("manifest has no file list")).mapValues {
                val f = it.value as Map<String, Any?>
                FileEntry(f.str("sha256")!!, (f["bytes"] as Number).toLong())
            }
            val tok = m.obj("tokenizer")?.let {
                TokenizerInfo((it.list("files") ?: emptyList()).map { f -> f as String },
                              it.int("pad_token_id") ?: 0, it.str("truncation_side") ?: "right")
            }
            val fixed = m.obj("fixed_input_shape")?.let { FixedShape(it.int("batch")!!, it.int("sequence")!!) }
            val options = (m.obj("provider_options") ?: emptyMap()).mapValues { (_, v) ->
                (v as Map<String, Any?>).mapValues { it.value.toString() }
            }
            return Manifest(
                task = m.str("task") ?: throw BundleException("manifest has no task"),
                target = m.str("target") ?: "",
                model = m.str("model") ?: "model.onnx",
                inputs = specs("inputs"),
                outputs = specs("outputs"),
                labelNames = m.list("label_names")?.map { it as String },
                pooling = m.str("pooling"),
                normalized = m.bool("normalized"),
                maxSequenceLength = m.int("max_sequence_length"),
                providers = (m.list("providers") ?: listOf("CPUExecutionProvider")).map { it as String },
                providerOptions = options,
                // Older manifests lack the key: they allowed the fallback.
                cpuEpFallback = m.bool("cpu_ep_fallback") ?: true,
                fixedInputShape = fixed,
                disabledOptimizers = m.obj("session_options")?.list("disabled_optimizers")?.map { it as String }
                    ?: emptyList(),
                tokenizer = tok,
                files = files,
                parity = m.str("parity") ?: "failed",
                decoder = m.obj("decoder"),
            )
        }
    }
}

/** Where a bundle's files come from: a folder on the JVM, the APK's assets on Android. */
interface BundleFiles {
    fun open(path: String): InputStream
    fun exists(path: String): Boolean
}

class FolderBundle(private val root: File) : BundleFiles {
    override fun open(path: String): InputStream = File(root, path).inputStream()
    override fun exists(path: String): Boolean = File(root, path).isFile
}

object BundleVerifier {
    /** Read manifest.json, refuse unknown versions and failed parity, check every file's sha256. */
    fun load(files: BundleFiles, allowFailedParity: Boolean = false): Manifest {
        if (!files.exists("manifest.json")) throw BundleException("not an edgeopt bundle: no manifest.json")
        val manifest = Manifest.parse(files.open("manifest.json").use { it.readBytes().toString(Charsets.UTF_8) })
        if (manifest.parity != "passed" && !allowFailedParity) {
            throw BundleException("the bundle's parity is '${manifest.parity}': do not ship it")
        }
        for ((path, entry) in manifest.files) {
            checkPath(path)
            if (!files.exists(path)) throw BundleException("bundle file $path listed in manifest.json is missing")
            val digest = sha256(files.open(path))
            if (digest != entry.sha256) {
                throw BundleException("bundle file $path does not match its sha256 in manifest.json: " +
                    "the bundle was modified or is corrupt")
            }
        }
        if (manifest.model !in manifest.files) throw BundleException("the model ${manifest.model} is not in the file list")
        return manifest
    }

    /** Manifest paths are relative and never leave the bundle. */
    fun checkPath(path: String) {
        val parts = path.split('/')
        if (path.startsWith("/") || path.contains('\\') || parts.any { it == ".." || it.isEmpty() }) {
            throw BundleException("manifest.json points outside the bundle ('$path'); refusing it")
        }
    }

    fun sha256(input: InputStream): String = input.use {
        val md = MessageDigest.getInstance("SHA-256")
        val buf = ByteArray(1 shl 16)
        while (true) {
            val n = it.read(buf)
            if (n < 0) break
            md.update(buf, 0, n)
        }
        md.digest().joinToString("") { b -> "%02x".format(b) }
    }
}
