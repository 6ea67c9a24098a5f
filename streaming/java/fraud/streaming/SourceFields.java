package fraud.streaming;

import java.io.IOException;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * What the SQL source reads from a raw record before the operator parses it (streaming/sql.py):
 * the event time, the watermark's input. One streaming pass over the record's top-level fields
 * instead of Flink's JSON_VALUE, which parsed the whole record into a map for every call (five
 * calls per record with the card key: ~half of the source task's CPU, measured). A record that is
 * not well-formed JSON gives the placeholder time 0; duplicate keys keep the last value, as the
 * operator's parser.
 */
public final class SourceFields {
    private static final JsonFactory JSON = new JsonFactory();

    private SourceFields() {}

    /** The top-level JSON number of {@code field}, or null (absent, not a number, not JSON). */
    static Number topLevelNumber(String raw, String field) {
        if (raw == null) {
            return null;
        }
        Number found = null;
        try (JsonParser p = JSON.createParser(raw)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.getCurrentName();
                JsonToken v = p.nextToken();
                if (name.equals(field)) {
                    found = v == JsonToken.VALUE_NUMBER_INT || v == JsonToken.VALUE_NUMBER_FLOAT
                            ? p.getNumberValue() : null;
                } else if (v == JsonToken.START_OBJECT || v == JsonToken.START_ARRAY) {
                    p.skipChildren();
                }
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                return null;
            }
        } catch (IOException | RuntimeException e) {
            return null;
        }
        return found;
    }

    /** EVENT_TIME_MS(raw, bound): ROUND(ts * 1000) (half up) when the top-level JSON number
     * {@code ts} is within [0, bound] seconds, else the placeholder 0 (never moves the watermark). */
    public static final class EventTimeMs extends ScalarFunction {
        private static final long serialVersionUID = 1L;
        private final String field;

        public EventTimeMs(String field) {
            this.field = field;
        }

        public Long eval(String raw, Double bound) {
            Number n = topLevelNumber(raw, field);
            if (n == null || bound == null) {
                return 0L;
            }
            double ts = n.doubleValue();
            if (!(ts >= 0 && ts <= bound)) {
                return 0L;
            }
            return CardFeatures.eventTimeMs(ts);
        }
    }
}
