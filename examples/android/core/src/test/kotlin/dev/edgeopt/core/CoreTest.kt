package dev.edgeopt.core

import org.junit.Test
import java.io.File
import java.nio.file.Files
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue

/**
 * The app logic against bundles the pytest side compiled (tests/test_android_core.py):
 * it passes -Dedgeopt.fixtures=FILE, a JSON of bundle paths and of what Python computed.
 */
@Suppress("UNCHECKED_CAST")
class CoreTest {
    private val fx: Map<String, Any?> = Json.parse(File(System.getProperty("edgeopt.fixtures")
        ?: error("run with -Dedgeopt.fixtures=FILE (tests/test_android_core.py does)")).readText()) as Map<String, Any?>
    private val classifierDir = File(fx.str("classifier_bundle")!!)
    private val embedderDir = File(fx.str("embedder_bundle")!!)

    private fun classifier() = BundleVerifier.load(FolderBundle(classifierDir))

    private fun copyBundle(src: File): File {
        val dst = Files.createTempDirectory("bundle").toFile()
        src.listFiles()!!.forEach { it.copyTo(File(dst, it.name)) }
        return dst
    }

    private fun floats(v: Any?) = (v as List<Any?>).map { (it as Number).toFloat() }.toFloatArray()

    @Test fun manifestIsReadAndVerified() {
        val m = classifier()
        assertEquals("text-classification", m.task)
        assertEquals(listOf("input_ids", "attention_mask", "token_type_ids"), m.inputs.map { it.name })
        assertEquals(fx.list("label_names"), m.labelNames)
        assertEquals(false, m.textInput)
        assertTrue(m.files.getValue("model.onnx").bytes > 0)
    }

    @Test fun aTamperedFileFailsVerification() {
        val dir = copyBundle(classifierDir)
        File(dir, "tokenizer.json").appendText(" ")
        val err = assertFailsWith<BundleException> { BundleVerifier.load(FolderBundle(dir)) }
        assertContains(err.message!!, "tokenizer.json does not match its sha256")
    }

    @Test fun aMissingFileOrAPathOutsideTheBundleFails() {
        val dir = copyBundle(classifierDir)
        File(dir, "report.md").delete()
        assertContains(assertFailsWith<BundleException> { BundleVerifier.load(FolderBundle(dir)) }.message!!, "report.md")
        val manifest = File(dir, "manifest.json")
        manifest.writeText(manifest.readText().replace("\"report.md\"", "\"../report.md\""))
        assertContains(assertFailsWith<BundleException> { BundleVerifier.load(FolderBundle(dir)) }.message!!, "outside the bundle")
    }

    @Test fun anUnknownVersionOrFailedParityIsRefused() {
        val text = File(classifierDir, "manifest.json").readText()
        assertFailsWith<BundleException> { Manifest.parse(text.replace("\"manifest_version\": 1", "\"manifest_version\": 2")) }
        val dir = copyBundle(classifierDir)
        File(dir, "manifest.json").writeText(text.replace("\"parity\": \"passed\"", "\"parity\": \"failed\""))
        assertContains(assertFailsWith<BundleException> { BundleVerifier.load(FolderBundle(dir)) }.message!!, "do not ship")
    }

    @Test fun providersFallBackAsTheManifestSays() {
        // android-int8's manifest spells them as its recipe does; onnxruntime names them its way.
        val android = classifier().copy(providers = listOf("NNAPIExecutionProvider", "XNNPACKExecutionProvider", "CPUExecutionProvider"))
        val (attempts, missing) = ProviderPlan.attempts(android, setOf("XnnpackExecutionProvider"))
        assertEquals(listOf("XNNPACKExecutionProvider", "CPUExecutionProvider"), attempts.map { it.label })
        assertEquals(listOf("NNAPIExecutionProvider"), missing)
        assertEquals(listOf(true, true), ProviderPlan.attempts(android, setOf("XnnpackExecutionProvider", "NnapiExecutionProvider"))
            .first.take(2).map { it.providers.last() == ProviderPlan.CPU })
        // XNNPACK is on the device but fails to load the graph: the CPU takes it, and both reasons are kept.
        val opened = ProviderPlan.open(android, setOf("XnnpackExecutionProvider")) { a ->
            if (a.label != "CPUExecutionProvider") throw IllegalStateException("op not supported")
            FakeClassifier(a.label, floatArrayOf(0f, 1f))
        }
        assertEquals("CPUExecutionProvider", opened.session.provider)
        assertEquals(listOf("not on this device", "op not supported"), opened.skipped.map { it.reason })

        val qnn = classifier().copy(providers = listOf("QNNExecutionProvider", "CPUExecutionProvider"), cpuEpFallback = false)
        val (onNpu, _) = ProviderPlan.attempts(qnn, setOf("QNNExecutionProvider"))
        assertEquals(listOf(ProviderAttempt(listOf("QNNExecutionProvider", "CPUExecutionProvider"), true)), onNpu)
        val err = assertFailsWith<BundleException> { ProviderPlan.open(qnn, emptySet()) { FakeClassifier(it.label, floatArrayOf()) } }
        assertContains(err.message!!, "QNNExecutionProvider: not on this device")
    }

    @Test fun wordPieceIdsEqualPython() {
        var n = 0
        for (tc in fx.list("tokenizer_cases")!!.map { it as Map<String, Any?> }) {
            val json = Json.parse(File(tc.str("tokenizer_json")!!).readText()) as Map<String, Any?>
            val tok = WordPieceTokenizer.fromTokenizerJson(json, tc.int("max_length"))
            for (case in tc.list("cases")!!.map { it as Map<String, Any?> }) {
                val enc = tok.encode(case.str("text")!!)
                val want = case.list("ids")!!.map { (it as Number).toLong() }
                assertEquals(want, enc.ids.toList(), "ids of ${case.str("text")!!.take(60)} (${tc.str("tokenizer_json")})")
                assertEquals(case.list("type_ids")!!.map { (it as Number).toLong() }, enc.typeIds.toList())
                n++
            }
        }
        assertTrue(n >= 10, "only $n tokenizer cases")
    }

    @Test fun postprocessingEqualsPython() {
        val m = classifier()
        val clf = Classifier(m, null, FakeClassifier("cpu", floatArrayOf()))
        val rows = fx.obj("logits")!!
        val probs = rows.list("probabilities")!!
        rows.list("rows")!!.forEachIndexed { i, row ->
            val c = clf.fromLogits(floats(row))
            assertEquals(rows.list("labels")!![i], c.label)
            floats(probs[i]).forEachIndexed { j, p -> assertEquals(p, c.probabilities[j], 1e-6f) }
        }
        val h = fx.obj("hidden")!!
        val shape = h.list("shape")!!.map { (it as Number).toLong() }.toLongArray()
        val mask = h.list("mask")!!.map { (it as Number).toLong() }.toLongArray()
        val emb = BundleVerifier.load(FolderBundle(embedderDir))
        val tokenStates = Embedder(emb.copy(pooling = "mean", normalized = true), null, FakeClassifier("cpu", floatArrayOf()))
        val got = tokenStates.fromOutput(Tensor.Floats(shape, floats(h["states"])), mask)
        val want = floats(h["expected"])
        want.indices.forEach { assertEquals(want[it], got[it], 1e-5f) }
    }

    @Test fun theClassifierFeedsTheManifestInputsAndPadsAFixedShape() {
        val m = classifier()
        val tok = Feeds.tokenizerFor(m, FolderBundle(classifierDir))!!
        val session = FakeClassifier("cpu", floatArrayOf(-1f, 2f))
        assertEquals(m.labelNames!![1], Classifier(m, tok, session).classify("a good movie").label)
        assertEquals(m.inputs.map { it.name }, session.seen.last().keys.toList())
        val fixed = m.copy(fixedInputShape = FixedShape(1, 16))
        Classifier(fixed, tok, session).classify("a good movie")
        val ids = session.seen.last()["input_ids"] as Tensor.Longs
        assertEquals(listOf(1L, 16L), ids.shape.toList())
        assertEquals(0L, (session.seen.last()["attention_mask"] as Tensor.Longs).data.last())
        // A text-in manifest (the tokenizer in the graph) needs no tokenizer and gets the string.
        val textIn = m.copy(inputs = listOf(TensorSpec("text", "object", listOf("batch"))))
        assertEquals(null, Feeds.tokenizerFor(textIn, FolderBundle(classifierDir)))
        Classifier(textIn, null, session).classify("a good movie")
        assertEquals("a good movie", (session.seen.last()["text"] as Tensor.Strings).data.single())
    }

    @Test fun greedyGenerationFeedsTheCacheBack() {
        val layout = DecoderLayout(numLayers = 2, numKvHeads = 1, headDim = 2, vocabSize = 10, eosTokenIds = setOf(7L))
        val session = FakeDecoder(layout)
        val out = GreedyGenerator(layout, session).generate(longArrayOf(2, 3), maxNewTokens = 8)
        assertEquals(listOf(4L, 5L, 6L, 7L), out.toList())  // stops at the end-of-sequence id
        assertEquals(listOf(2, 1, 1, 1), session.steps)  // the prompt once, then one token a step
        assertEquals(2, GreedyGenerator(layout, FakeDecoder(layout)).generate(longArrayOf(1), maxNewTokens = 2).size)
    }

    @Test fun benchJsonIsWrittenForEdgeoptReport() {
        var t = 0L
        val samples = DeviceBench.measure(warmup = 2, repeats = 20, clockNs = { t += 1_000_000; t }) { }
        assertEquals(20, samples.size)
        assertEquals(BenchStats.percentile(listOf(1.0, 2.0, 3.0, 4.0), 90.0), 3.7, 1e-12)
        val m = classifier()
        val bench = DeviceBench(m, DeviceInfo("JVM test", "x86_64", 0), "CPUExecutionProvider",
            listOf(Skipped(ProviderAttempt(listOf("XnnpackExecutionProvider"), false), "not on this device")),
            threads = 1, sequence = 16, warmup = 2, samplesMs = List(20) { 1.0 + it * 0.1 })
        val text = bench.toJson()
        File(fx.str("bench_out")!!).writeText(text)
        val back = Json.parse(text) as Map<String, Any?>
        assertEquals(m.files.getValue("model.onnx").sha256, back.obj("bundle")!!.str("model_sha256"))
        assertEquals(1.0 + 19 * 0.1 * 0.5, (back.obj("latency_ms")!!["p50"] as Number).toDouble(), 1e-9)
    }

    @Test fun jsonRoundTrips() {
        val v = linkedMapOf("a" to listOf(1L, 2.5, "x\"\n\u00e9😀", null, true), "b" to emptyMap<String, Any?>())
        assertEquals(v, Json.parse(Json.write(v)))
        assertFailsWith<IllegalArgumentException> { Json.parse("{\"a\": 1,}") }
    }
}

/** A classifier "session" that returns fixed logits and records its feeds. */
class FakeClassifier(override val provider: String, private val logits: FloatArray) : ModelSession {
    val seen = ArrayList<Map<String, Tensor>>()
    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        seen.add(inputs)
        return mapOf("logits" to Tensor.Floats(longArrayOf(1, logits.size.toLong()), logits))
    }
    override fun close() {}
}

/**
 * A decoder "session" that checks the loop's feeds the way the graph would (the mask as
 * long as past + new, positions after the past, one cache entry per token held) and
 * predicts last token + 1.
 */
class FakeDecoder(private val layout: DecoderLayout) : ModelSession {
    override val provider = "cpu"
    val steps = ArrayList<Int>()
    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val ids = inputs["input_ids"] as Tensor.Longs
        val n = ids.data.size
        val past = inputs["past_key_values.0.key"] as Tensor.Floats
        val held = past.shape[2].toInt()
        check((inputs["attention_mask"] as Tensor.Longs).data.size == held + n) { "mask length" }
        check((inputs["position_ids"] as Tensor.Longs).data.toList() == (held until held + n).map { it.toLong() }) { "positions" }
        steps.add(n)
        val vocab = layout.vocabSize
        val logits = FloatArray(n * vocab)
        for (t in 0 until n) logits[t * vocab + ((ids.data[t] + 1) % vocab).toInt()] = 1f
        val out = HashMap<String, Tensor>()
        out["logits"] = Tensor.Floats(longArrayOf(1, n.toLong(), vocab.toLong()), logits)
        for (i in 0 until layout.numLayers) for (kind in listOf("key", "value")) {
            val p = inputs["past_key_values.$i.$kind"] as Tensor.Floats
            val size = (held + n) * layout.headDim * layout.numKvHeads
            out["present.$i.$kind"] = Tensor.Floats(longArrayOf(1, layout.numKvHeads.toLong(), (held + n).toLong(),
                layout.headDim.toLong()), p.data.copyOf(size))
        }
        return out
    }
    override fun close() {}
}
