package dev.edgeopt.core

import kotlin.math.exp
import kotlin.math.sqrt

/** Post-processing as the manifest says: softmax/argmax for classifiers, pooling and L2 for embeddings. */
object Processing {
    fun softmax(logits: FloatArray): FloatArray {
        val max = logits.max()
        val e = logits.map { exp((it - max).toDouble()) }
        val sum = e.sum()
        return FloatArray(logits.size) { (e[it] / sum).toFloat() }
    }

    fun argmax(values: FloatArray): Int = values.indices.maxBy { values[it] }

    /** Token states [sequence, hidden] to one vector, counting only attended tokens. */
    fun pool(states: FloatArray, sequence: Int, hidden: Int, mask: LongArray, pooling: String): FloatArray = when (pooling) {
        "cls" -> states.copyOfRange(0, hidden)
        "mean" -> {
            val out = DoubleArray(hidden)
            var n = 0
            for (t in 0 until sequence) {
                if (mask[t] == 0L) continue
                n++
                for (h in 0 until hidden) out[h] += states[t * hidden + h].toDouble()
            }
            FloatArray(hidden) { (out[it] / maxOf(n, 1)).toFloat() }
        }
        else -> throw BundleException("pooling '$pooling' is not one this app implements")
    }

    fun l2normalize(v: FloatArray): FloatArray {
        val norm = sqrt(v.sumOf { it.toDouble() * it })
        return if (norm == 0.0) v.copyOf() else FloatArray(v.size) { (v[it] / norm).toFloat() }
    }

    fun cosine(a: FloatArray, b: FloatArray): Double {
        var dot = 0.0; var na = 0.0; var nb = 0.0
        for (i in a.indices) { dot += a[i] * b[i].toDouble(); na += a[i] * a[i].toDouble(); nb += b[i] * b[i].toDouble() }
        return dot / (sqrt(na) * sqrt(nb))
    }
}
