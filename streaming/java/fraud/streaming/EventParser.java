package fraud.streaming;

import java.io.IOException;
import java.io.Serializable;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Reads one raw event record: strict JSON, typed fields, the specification's value rule.
 *
 * <p>The port of streaming/parse.py (the Python oracle, which tests/test_java_operator.py compares
 * with this class record by record): the same accept/reject decision, the same fields and, apart
 * from the text of a JSON syntax error, the same reason. The JSON reading follows orjson's rules:
 * NaN/Infinity literals, a number that overflows a double, an unpaired surrogate escape, trailing
 * content and nesting deeper than 1024 are errors; duplicate keys keep the last value; an integer
 * within [-2^63, 2^64) is an integer, a larger one a float. Names, bounds and their rendered forms
 * come from features/spec.py through {@link JobConfig}.
 */
public final class EventParser implements Serializable {
    private static final long serialVersionUID = 1L;
    private static final BigInteger I64_MIN = BigInteger.valueOf(Long.MIN_VALUE);
    private static final BigInteger U64_MAX = BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE);
    private static final int MAX_DEPTH = 1024;

    private final JobConfig c;
    private transient ObjectMapper mapper;

    public EventParser(JobConfig config) {
        this.c = config;
    }

    /** A parsed event (the input columns) or a reason. */
    public static final class Result {
        public final String tid;
        public final long card;
        public final double amount;
        public final double ts;
        public final String[] optional;
        public final Integer label;
        public final String reason;

        Result(String tid, long card, double amount, double ts, String[] optional, Integer label) {
            this.tid = tid;
            this.card = card;
            this.amount = amount;
            this.ts = ts;
            this.optional = optional;
            this.label = label;
            this.reason = null;
        }

        Result(String reason) {
            this.tid = null;
            this.card = 0;
            this.amount = 0;
            this.ts = 0;
            this.optional = null;
            this.label = null;
            this.reason = reason;
        }
    }

    private ObjectMapper mapper() {
        if (mapper == null) {
            mapper = new ObjectMapper();
            mapper.enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
            mapper.disable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION); // last value wins, as orjson
        }
        return mapper;
    }

    String timeField() {
        return c.timeField;
    }

    /** The JSON value, or null with the reason in {@code why[0]}. */
    JsonNode read(String raw, String[] why) {
        JsonNode node;
        try {
            node = mapper().readTree(raw);
        } catch (IOException | RuntimeException | StackOverflowError e) {
            why[0] = "bad JSON: " + shorten(e.getMessage());
            return null;
        }
        if (node == null || node.isMissingNode()) {
            why[0] = "bad JSON: unexpected end of input";
            return null;
        }
        String problem = strictProblem(node, 0);
        if (problem != null) {
            why[0] = "bad JSON: " + problem;
            return null;
        }
        return node;
    }

    private static String shorten(String message) {
        String m = message == null ? "unreadable" : String.join(" ", message.trim().split("\\s+"));
        int cut = m.indexOf(" at [Source");
        if (cut > 0) {
            m = m.substring(0, cut);
        }
        return m.length() > 200 ? m.substring(0, 200) : m;
    }

    /** What orjson rejects and Jackson reads: infinite numbers, unpaired surrogates, deep nesting. */
    private static String strictProblem(JsonNode node, int depth) {
        if (depth > MAX_DEPTH) {
            return "recursion limit reached";
        }
        if (node.isFloatingPointNumber() && Double.isInfinite(node.doubleValue())) {
            return "number is infinity when parsed as double";
        }
        if (node.isTextual() && !wellFormed(node.textValue())) {
            return "unpaired surrogate in string";
        }
        if (node.isObject()) {
            Iterator<Map.Entry<String, JsonNode>> it = node.fields();
            while (it.hasNext()) {
                Map.Entry<String, JsonNode> e = it.next();
                if (!wellFormed(e.getKey())) {
                    return "unpaired surrogate in string";
                }
                String p = strictProblem(e.getValue(), depth + 1);
                if (p != null) {
                    return p;
                }
            }
        } else if (node.isArray()) {
            for (JsonNode v : node) {
                String p = strictProblem(v, depth + 1);
                if (p != null) {
                    return p;
                }
            }
        }
        return null;
    }

    private static boolean wellFormed(String s) {
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (Character.isHighSurrogate(ch)) {
                if (i + 1 >= s.length() || !Character.isLowSurrogate(s.charAt(i + 1))) {
                    return false;
                }
                i++;
            } else if (Character.isLowSurrogate(ch)) {
                return false;
            }
        }
        return true;
    }

    // --- Python's view of a JSON value (orjson: int within [-2^63, 2^64), else float) ---------------
    static boolean isInt(JsonNode v) {
        if (v.isIntegralNumber()) {
            if (v.isBigInteger()) {
                BigInteger b = v.bigIntegerValue();
                return b.compareTo(I64_MIN) >= 0 && b.compareTo(U64_MAX) <= 0;
            }
            return true;
        }
        return false;
    }

    static boolean isFloat(JsonNode v) {
        return v.isNumber() && !isInt(v);
    }

    static double toDouble(JsonNode v) {
        return v.isBigInteger() ? v.bigIntegerValue().doubleValue() : v.doubleValue();
    }

    static String typeName(JsonNode v) {
        if (v.isObject()) {
            return "dict";
        }
        if (v.isArray()) {
            return "list";
        }
        if (v.isTextual()) {
            return "str";
        }
        if (v.isBoolean()) {
            return "bool";
        }
        if (v.isNull()) {
            return "NoneType";
        }
        return isInt(v) ? "int" : "float";
    }

    /** Python's repr() of the value json.loads would give (reasons quote values this way). */
    static String repr(JsonNode v) {
        if (v == null || v.isNull()) {
            return "None";
        }
        if (v.isBoolean()) {
            return v.booleanValue() ? "True" : "False";
        }
        if (v.isTextual()) {
            return reprString(v.textValue());
        }
        if (isInt(v)) {
            return v.bigIntegerValue().toString();
        }
        if (v.isNumber()) {
            return reprDouble(toDouble(v));
        }
        StringBuilder b = new StringBuilder();
        if (v.isArray()) {
            b.append('[');
            String sep = "";
            for (JsonNode x : v) {
                b.append(sep).append(repr(x));
                sep = ", ";
            }
            return b.append(']').toString();
        }
        b.append('{');
        String sep = "";
        Iterator<Map.Entry<String, JsonNode>> it = v.fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            b.append(sep).append(reprString(e.getKey())).append(": ").append(repr(e.getValue()));
            sep = ", ";
        }
        return b.append('}').toString();
    }

    static String reprString(String s) {
        char quote = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
        StringBuilder b = new StringBuilder().append(quote);
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (ch == quote || ch == '\\') {
                b.append('\\').append(ch);
            } else if (ch == '\n') {
                b.append("\\n");
            } else if (ch == '\r') {
                b.append("\\r");
            } else if (ch == '\t') {
                b.append("\\t");
            } else if (ch < 0x20 || ch == 0x7f) {
                b.append(String.format("\\x%02x", (int) ch));
            } else {
                b.append(ch);
            }
        }
        return b.append(quote).toString();
    }

    /** Python's repr(float): shortest digits, fixed notation for 1e-4 <= |x| < 1e16, else e+XX. */
    public static String reprDouble(double d) {
        if (Double.isNaN(d)) {
            return "nan";
        }
        if (Double.isInfinite(d)) {
            return d > 0 ? "inf" : "-inf";
        }
        if (d == 0) {
            return (1 / d < 0) ? "-0.0" : "0.0";
        }
        BigDecimal x = shortest(Math.abs(d));
        String digits = x.unscaledValue().toString();
        int decpt = digits.length() - x.scale(); // value = 0.<digits> * 10^decpt
        StringBuilder b = new StringBuilder(d < 0 ? "-" : "");
        if (decpt > -4 && decpt <= 16) {
            if (decpt <= 0) {
                b.append("0.").append("0".repeat(-decpt)).append(digits);
            } else if (decpt >= digits.length()) {
                b.append(digits).append("0".repeat(decpt - digits.length())).append(".0");
            } else {
                b.append(digits, 0, decpt).append('.').append(digits.substring(decpt));
            }
        } else {
            b.append(digits.charAt(0));
            if (digits.length() > 1) {
                b.append('.').append(digits.substring(1));
            }
            int exp = decpt - 1;
            b.append(exp < 0 ? "e-" : "e+").append(String.format("%02d", Math.abs(exp)));
        }
        return b.toString();
    }

    /** The shortest decimal that reads back as d, the closest one of that length (Python's repr;
     * Java 17's Double.toString is not always the shortest). */
    private static BigDecimal shortest(double d) {
        BigDecimal exact = new BigDecimal(d);
        for (int p = 1; p < 17; p++) {
            BigDecimal r = exact.round(new java.math.MathContext(p, java.math.RoundingMode.HALF_EVEN));
            if (r.doubleValue() == d) {
                return r.stripTrailingZeros();
            }
        }
        return exact.round(new java.math.MathContext(17, java.math.RoundingMode.HALF_EVEN)).stripTrailingZeros();
    }

    /** json.dumps of a scalar that is not a string (optional text fields keep numbers as text). */
    static String jsonText(JsonNode v) {
        if (v.isBoolean()) {
            return v.booleanValue() ? "true" : "false";
        }
        if (isInt(v)) {
            return v.bigIntegerValue().toString();
        }
        return reprDouble(toDouble(v));
    }

    /** spec.value_problem for an integer card. */
    private String cardProblem(BigInteger card) {
        if (card.compareTo(BigInteger.ZERO) < 0) {
            return c.cardField + " must be >= " + c.lowText.get(c.cardField) + ", got " + card;
        }
        if (card.compareTo(BigInteger.valueOf(Long.MAX_VALUE)) > 0) {
            return c.cardField + " must be <= " + c.highText.get(c.cardField) + ", got " + card;
        }
        return null;
    }

    /** spec.value_problem for a float value. */
    private String valueProblem(String field, double value) {
        if (Double.isNaN(value) || Double.isInfinite(value)) {
            return field + " must be finite, got " + reprDouble(value);
        }
        Double low = c.low.get(field);
        Double high = c.high.get(field);
        if (low != null && value < low) {
            return field + " must be >= " + c.lowText.get(field) + ", got " + reprDouble(value);
        }
        if (high != null && value > high) {
            return field + " must be <= " + c.highText.get(field) + ", got " + reprDouble(value);
        }
        return null;
    }

    public Result parse(String raw) {
        String[] why = new String[1];
        JsonNode obj = read(raw, why);
        if (obj == null) {
            return new Result(why[0]);
        }
        if (!obj.isObject()) {
            return new Result("event is not a JSON object but " + typeName(obj));
        }
        List<String> missing = new ArrayList<>();
        for (String f : c.eventFields) {
            JsonNode v = obj.get(f);
            if (v == null || v.isNull()) {
                missing.add(f);
            }
        }
        if (!missing.isEmpty()) {
            return new Result("missing field(s): " + String.join(", ", missing));
        }
        JsonNode tid = obj.get(c.tidField);
        if (!tid.isTextual() || tid.textValue().isEmpty()) {
            return new Result(c.tidField + " must be a non-empty string, got " + repr(tid));
        }
        JsonNode cardNode = obj.get(c.cardField);
        BigInteger card;
        if (isInt(cardNode)) {
            card = cardNode.bigIntegerValue();
        } else if (isFloat(cardNode)) {
            double d = toDouble(cardNode);
            if (Double.isInfinite(d) || d != Math.rint(d)) {
                return new Result(c.cardField + " must be an integer, got " + repr(cardNode));
            }
            card = new BigDecimal(d).toBigInteger();
        } else {
            return new Result(c.cardField + " must be an integer, got " + repr(cardNode));
        }
        JsonNode amountNode = obj.get(c.amountField);
        JsonNode tsNode = obj.get(c.timeField);
        for (String name : new String[] {c.amountField, c.timeField}) {
            JsonNode v = name.equals(c.amountField) ? amountNode : tsNode;
            if (!v.isNumber()) {
                return new Result(name + " must be a number, got " + repr(v));
            }
        }
        double amount = toDouble(amountNode);
        double ts = toDouble(tsNode);
        String problem = cardProblem(card);
        if (problem == null) {
            problem = valueProblem(c.amountField, amount);
        }
        if (problem == null) {
            problem = valueProblem(c.timeField, ts);
        }
        if (problem != null) {
            return new Result(problem);
        }
        JsonNode labelNode = obj.get(c.labelField);
        Integer label = null;
        if (labelNode != null && !labelNode.isNull()) {
            double lv = Double.NaN;
            if (labelNode.isBoolean()) {
                lv = labelNode.booleanValue() ? 1 : 0;
            } else if (labelNode.isNumber()) {
                lv = toDouble(labelNode);
            }
            if (isInt(labelNode) && !labelNode.bigIntegerValue().equals(BigInteger.ZERO)
                    && !labelNode.bigIntegerValue().equals(BigInteger.ONE)) {
                lv = Double.NaN;
            }
            if (lv != 0 && lv != 1) {
                return new Result(c.labelField + " must be 0 or 1 when present, got " + repr(labelNode));
            }
            label = (int) lv;
        }
        String[] optional = new String[c.optionalFields.size()];
        for (int i = 0; i < optional.length; i++) {
            String name = c.optionalFields.get(i);
            JsonNode v = obj.get(name);
            if (v == null || v.isNull()) {
                optional[i] = null;
            } else if (v.isTextual()) {
                optional[i] = v.textValue();
            } else if (v.isContainerNode()) {
                return new Result(name + " must be a JSON scalar, got " + typeName(v));
            } else {
                optional[i] = jsonText(v);
            }
        }
        return new Result(tid.textValue(), card.longValue(), amount, ts, optional, label);
    }

    /** streaming.parse.card_of: the record's card when readable (0 <= card < 2^63), else 0. */
    public long cardOf(String raw) {
        JsonNode obj = read(raw, new String[1]);
        if (obj == null || !obj.isObject()) {
            return 0;
        }
        JsonNode v = obj.get(c.cardField);
        if (v == null || v.isNull() || v.isBoolean() || !v.isNumber()) {
            return 0;
        }
        BigDecimal x;
        if (isInt(v)) {
            x = new BigDecimal(v.bigIntegerValue());
        } else {
            double d = toDouble(v);
            if (Double.isInfinite(d) || d != Math.rint(d)) {
                return 0;
            }
            x = new BigDecimal(d);
        }
        if (x.signum() < 0 || x.compareTo(new BigDecimal(BigInteger.valueOf(Long.MAX_VALUE))) > 0) {
            return 0;
        }
        return x.longValueExact();
    }
}
