package dev.edgeopt.example

import android.app.Activity
import android.content.Intent
import android.os.Build
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import dev.edgeopt.core.Classifier
import dev.edgeopt.core.DecoderLayout
import dev.edgeopt.core.DeviceBench
import dev.edgeopt.core.DeviceInfo
import dev.edgeopt.core.Embedder
import dev.edgeopt.core.Feeds
import dev.edgeopt.core.GreedyGenerator
import java.io.File
import java.util.concurrent.Executors

/** A screen of plain views: the provider line, an input, a button, the result. */
abstract class Screen : Activity() {
    protected lateinit var input: EditText
    protected lateinit var output: TextView
    private val worker = Executors.newSingleThreadExecutor()

    // Not `title`/`hint`: Activity's final getTitle() and EditText's hint would clash.
    abstract val screenTitle: String
    abstract val inputHint: String
    abstract fun compute(bundle: LoadedBundle, text: String): String

    override fun onCreate(state: Bundle?) {
        super.onCreate(state)
        setTitle(screenTitle)
        val column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(32, 32, 32, 32) }
        val provider = TextView(this)
        input = EditText(this).apply { setHint(inputHint) }
        output = TextView(this).apply { setTextIsSelectable(true) }
        val run = Button(this).apply { text = "Run" }
        listOf(provider, input, run, output).forEach { column.addView(it) }
        setContentView(ScrollView(this).apply { addView(column) })
        background({ LoadedBundle.get(this).providerLine }) { provider.text = it }
        run.setOnClickListener {
            val text = input.text.toString()
            output.text = "running…"
            background({ compute(LoadedBundle.get(this), text) }) { output.text = it }
        }
    }

    /** Model work off the UI thread; errors are shown, not thrown. */
    protected fun background(work: () -> String, show: (String) -> Unit) {
        worker.execute {
            val text = try { work() } catch (e: Exception) { "error: ${e.message}" }
            runOnUiThread { show(text) }
        }
    }

    override fun onDestroy() {
        worker.shutdown()
        super.onDestroy()
    }
}

class ClassifyActivity : Screen() {
    override val screenTitle = "Classification"
    override val inputHint = "a sentence"
    override fun compute(bundle: LoadedBundle, text: String): String {
        val c = Classifier(bundle.manifest, bundle.tokenizer, bundle.opened.session).classify(text)
        return "label: ${c.label}\n" + (bundle.manifest.labelNames ?: emptyList()).mapIndexed { i, name ->
            "%s: %.4f".format(name, c.probabilities[i])
        }.joinToString("\n")
    }
}

class EmbedActivity : Screen() {
    override val screenTitle = "Embeddings"
    override val inputHint = "two sentences, one per line"
    override fun compute(bundle: LoadedBundle, text: String): String {
        val embedder = Embedder(bundle.manifest, bundle.tokenizer, bundle.opened.session)
        val lines = text.lines().filter { it.isNotBlank() }
        val vectors = lines.map { embedder.embed(it) }
        val head = vectors.firstOrNull()?.take(6)?.joinToString { "%.4f".format(it) } ?: ""
        val cos = if (vectors.size >= 2) "\ncosine(1, 2) = %.4f".format(dev.edgeopt.core.Processing.cosine(vectors[0], vectors[1])) else ""
        return "dimension ${vectors.firstOrNull()?.size}; first values: $head$cos"
    }
}

class GenerateActivity : Screen() {
    override val screenTitle = "Generation"
    override val inputHint = "prompt token ids, space separated"
    override fun compute(bundle: LoadedBundle, text: String): String {
        val layout = DecoderLayout.of(bundle.manifest)
        val prompt = text.trim().split(Regex("\\s+")).map { it.toLong() }.toLongArray()
        val out = GreedyGenerator(layout, bundle.opened.session).generate(prompt, maxNewTokens = 32)
        return "new token ids: ${out.joinToString(" ")}"
    }
}

/** Times the bundle's model on this device and writes the JSON `edgeopt report --device-bench` reads. */
class BenchActivity : Screen() {
    override val screenTitle = "Benchmark"
    override val inputHint = "a sentence to time (batch 1)"
    override fun compute(bundle: LoadedBundle, text: String): String {
        val m = bundle.manifest
        val enc = bundle.tokenizer?.encode(text.ifEmpty { "the movie was good" })
        val feeds = Feeds.build(m, text, enc)
        val session = bundle.opened.session
        val samples = DeviceBench.measure(warmup = 10, repeats = 100) { session.run(feeds) }
        val bench = DeviceBench(m, DeviceInfo("${Build.MANUFACTURER} ${Build.MODEL}", Build.SUPPORTED_ABIS.first(), Build.VERSION.SDK_INT),
            session.provider, bundle.opened.skipped, threads = 4,
            sequence = (feeds["input_ids"]?.shape?.get(1) ?: 0L).toInt(), warmup = 10, samplesMs = samples)
        val file = File(getExternalFilesDir(null), "device-bench.json")
        file.writeText(bench.toJson())
        return "p50 %.2f ms over %d runs on %s\nwrote %s\n(adb pull it, then: edgeopt report BUNDLE --device-bench device-bench.json -o report.html)"
            .format(dev.edgeopt.core.BenchStats.of(samples).p50, samples.size, session.provider, file.absolutePath)
    }
}

/** The launcher: one button per screen, the ones the bundle's task has. */
class MainActivity : Activity() {
    override fun onCreate(state: Bundle?) {
        super.onCreate(state)
        val column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(32, 32, 32, 32) }
        val status = TextView(this).apply { text = "verifying the bundle…" }
        column.addView(status)
        setContentView(column)
        Executors.newSingleThreadExecutor().execute {
            val result = runCatching { LoadedBundle.get(this) }
            runOnUiThread {
                result.onFailure { status.text = "bundle refused: ${it.message}" }
                result.onSuccess { b ->
                    status.text = "${b.manifest.target} ${b.manifest.task}, hashes verified\n${b.providerLine}"
                    val screens = when (b.manifest.task) {
                        "text-classification" -> listOf("Classification" to ClassifyActivity::class.java)
                        "feature-extraction" -> listOf("Embeddings" to EmbedActivity::class.java)
                        "text-generation" -> listOf("Generation" to GenerateActivity::class.java)
                        else -> emptyList()
                    } + listOf("Benchmark" to BenchActivity::class.java)
                    screens.forEach { (label, cls) ->
                        column.addView(Button(this).apply {
                            text = label
                            setOnClickListener { startActivity(Intent(this@MainActivity, cls)) }
                        })
                    }
                }
            }
        }
    }
}
