package dev.edgeopt.example

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtProvider
import ai.onnxruntime.OrtSession
import ai.onnxruntime.extensions.OrtxPackage
import dev.edgeopt.core.Manifest
import dev.edgeopt.core.ModelSession
import dev.edgeopt.core.Opened
import dev.edgeopt.core.ProviderAttempt
import dev.edgeopt.core.ProviderPlan
import dev.edgeopt.core.Tensor
import java.nio.FloatBuffer
import java.nio.LongBuffer

/** [ModelSession] over onnxruntime-android: the only class that touches OrtSession. */
class OrtModelSession private constructor(
    private val env: OrtEnvironment,
    private val session: OrtSession,
    override val provider: String,
) : ModelSession {

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val feeds = inputs.mapValues { (_, t) -> toOrt(t) }
        try {
            session.run(feeds).use { result ->
                return result.associate { (name, value) -> name to fromOrt(value as OnnxTensor) }
            }
        } finally {
            feeds.values.forEach { it.close() }
        }
    }

    override fun close() = session.close()

    private fun toOrt(t: Tensor): OnnxTensor = when (t) {
        is Tensor.Longs -> OnnxTensor.createTensor(env, LongBuffer.wrap(t.data), t.shape)
        is Tensor.Floats -> OnnxTensor.createTensor(env, FloatBuffer.wrap(t.data), t.shape)
        is Tensor.Strings -> OnnxTensor.createTensor(env, t.data, t.shape)
    }

    private fun fromOrt(t: OnnxTensor): Tensor {
        val shape = t.info.shape
        return when (t.info.type) {
            ai.onnxruntime.OnnxJavaType.INT64 -> t.longBuffer.let { b -> Tensor.Longs(shape, LongArray(b.remaining()).also { b.get(it) }) }
            else -> t.floatBuffer.let { b -> Tensor.Floats(shape, FloatArray(b.remaining()).also { b.get(it) }) }
        }
    }

    companion object {
        /** The execution providers this build of onnxruntime has on this device, by EP name. */
        fun available(): Set<String> = OrtEnvironment.getAvailableProviders().map { epName(it) }.toSet()

        private fun epName(p: OrtProvider): String = when (p) {
            OrtProvider.NNAPI -> "NnapiExecutionProvider"
            OrtProvider.XNNPACK -> "XnnpackExecutionProvider"
            OrtProvider.QNN -> "QNNExecutionProvider"
            OrtProvider.CPU -> "CPUExecutionProvider"
            else -> p.getName()
        }

        /** Open [model] with the providers the manifest names, falling back as it says. */
        fun open(manifest: Manifest, model: ByteArray, threads: Int): Opened {
            val env = OrtEnvironment.getEnvironment()
            return ProviderPlan.open(manifest, available()) { attempt -> create(env, manifest, model, threads, attempt) }
        }

        private fun create(env: OrtEnvironment, manifest: Manifest, model: ByteArray, threads: Int,
                           attempt: ProviderAttempt): ModelSession {
            val options = OrtSession.SessionOptions()
            options.setIntraOpNumThreads(threads)
            // The graph transformers the bundle was validated without (its report says why).
            if (manifest.disabledOptimizers.isNotEmpty()) {
                options.addConfigEntry("optimization.disable_specified_optimizers", manifest.disabledOptimizers.joinToString(","))
            }
            if (attempt.disableCpuFallback) options.addConfigEntry("session.disable_cpu_ep_fallback", "1")
            if (manifest.textInput) options.registerCustomOpLibrary(OrtxPackage.getLibraryPath())
            for (ep in attempt.providers) {
                val opts = manifest.providerOptions.entries.firstOrNull { it.key.equals(ep, ignoreCase = true) }?.value ?: emptyMap()
                when (ep.lowercase()) {
                    "nnapiexecutionprovider" -> options.addNnapi()
                    "xnnpackexecutionprovider" -> options.addXnnpack(opts + ("intra_op_num_threads" to threads.toString()))
                    "qnnexecutionprovider" -> options.addQnn(opts)
                    "cpuexecutionprovider" -> Unit // always there, behind the others
                    else -> throw IllegalStateException("$ep is not a provider this app registers")
                }
            }
            return OrtModelSession(env, env.createSession(model, options), attempt.label)
        }
    }
}
