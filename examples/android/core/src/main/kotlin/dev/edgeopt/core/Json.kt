package dev.edgeopt.core

/**
 * A small JSON reader and writer: objects become [Map], arrays [List], numbers [Double]
 * (or [Long] when integral and written without a fraction), plus String, Boolean, null.
 * Kept in the module so that it builds with kotlinc alone (no Maven here) and so the app
 * does not depend on org.json, which a plain JVM does not have.
 */
object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        val value = p.value()
        p.skipSpace()
        if (p.pos != text.length) throw IllegalArgumentException("trailing characters at ${p.pos}")
        return value
    }

    fun write(value: Any?): String = StringBuilder().also { write(value, it) }.toString()

    private fun write(value: Any?, out: StringBuilder) {
        when (value) {
            null -> out.append("null")
            is String -> quote(value, out)
            is Boolean -> out.append(value)
            is Float -> number(value.toDouble(), out)
            is Double -> number(value, out)
            is Number -> out.append(value.toLong())
            is Map<*, *> -> {
                out.append('{')
                value.entries.forEachIndexed { i, (k, v) ->
                    if (i > 0) out.append(',')
                    quote(k.toString(), out); out.append(':'); write(v, out)
                }
                out.append('}')
            }
            is Iterable<*> -> {
                out.append('[')
                value.forEachIndexed { i, v -> if (i > 0) out.append(','); write(v, out) }
                out.append(']')
            }
            is DoubleArray -> write(value.toList(), out)
            is FloatArray -> write(value.toList(), out)
            is LongArray -> write(value.toList(), out)
            is IntArray -> write(value.toList(), out)
            else -> throw IllegalArgumentException("cannot write ${value::class} as JSON")
        }
    }

    private fun number(v: Double, out: StringBuilder) {
        require(v.isFinite()) { "JSON has no NaN or infinity" }
        out.append(v)
    }

    private fun quote(s: String, out: StringBuilder) {
        out.append('"')
        for (c in s) when {
            c == '"' -> out.append("\\\"")
            c == '\\' -> out.append("\\\\")
            c == '\n' -> out.append("\\n")
            c == '\r' -> out.append("\\r")
            c == '\t' -> out.append("\\t")
            c < ' ' -> out.append(String.format("\\u%04x", c.code))
            else -> out.append(c)
        }
        out.append('"')
    }

    private class Parser(val s: String) {
        var pos = 0

        fun skipSpace() {
            while (pos < s.length && s[pos] in " \t\r\n") pos++
        }

        fun value(): Any? {
            skipSpace()
            if (pos >= s.length) throw error("unexpected end")
            return when (val c = s[pos]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c.isDigit()) num() else throw error("unexpected '$c'")
            }
        }

        private fun error(what: String) = IllegalArgumentException("JSON: $what at $pos")

        private fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, pos)) throw error("bad literal")
            pos += word.length
            return v
        }

        private fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            pos++
            skipSpace()
            if (s[pos] == '}') { pos++; return out }
            while (true) {
                skipSpace()
                if (s[pos] != '"') throw error("expected a key")
                val k = str()
                skipSpace()
                if (s[pos++] != ':') throw error("expected ':'")
                out[k] = value()
                skipSpace()
                when (s[pos++]) {
                    ',' -> continue
                    '}' -> return out
                    else -> throw error("expected ',' or '}'")
                }
            }
        }

        private fun arr(): List<Any?> {
            val out = ArrayList<Any?>()
            pos++
            skipSpace()
            if (s[pos] == ']') { pos++; return out }
            while (true) {
                out.add(value())
                skipSpace()
                when (s[pos++]) {
                    ',' -> continue
                    ']' -> return out
                    else -> throw error("expected ',' or ']'")
                }
            }
        }

        private fun str(): String {
            val out = StringBuilder()
            pos++
            while (true) {
                if (pos >= s.length) throw error("unterminated string")
                val c = s[pos++]
                when (c) {
                    '"' -> return out.toString()
                    '\\' -> {
                        when (val e = s[pos++]) {
                            'n' -> out.append('\n'); 't' -> out.append('\t'); 'r' -> out.append('\r')
                            'b' -> out.append('\b'); 'f' -> out.append('\u000c')
                            'u' -> { out.append(s.substring(pos, pos + 4).toInt(16).toChar()); pos += 4 }
                            else -> out.append(e)
                        }
                    }
                    else -> out.append(c)
                }
            }
        }

        private fun num(): Number {
            val start = pos
            if (s[pos] == '-') pos++
            while (pos < s.length && (s[pos].isDigit() || s[pos] in ".eE+-")) pos++
            val t = s.substring(start, pos)
            return if (t.any { it in ".eE" }) t.toDouble() else t.toLongOrNull() ?: t.toDouble()
        }
    }
}

/** Typed reads of parsed JSON, failing with the key that was wrong. */
@Suppress("UNCHECKED_CAST")
internal fun Map<String, Any?>.obj(key: String): Map<String, Any?>? = this[key] as Map<String, Any?>?

@Suppress("UNCHECKED_CAST")
internal fun Map<String, Any?>.list(key: String): List<Any?>? = this[key] as List<Any?>?

internal fun Map<String, Any?>.str(key: String): String? = this[key] as String?

internal fun Map<String, Any?>.int(key: String): Int? = (this[key] as Number?)?.toInt()

internal fun Map<String, Any?>.bool(key: String): Boolean? = this[key] as Boolean?
