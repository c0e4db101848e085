// Privacy Plane events with the CloudEvents Java SDK (io.cloudevents:cloudevents-kafka), as the
// interop test runs it (tests/integration/interop/test_interop.py; docs/integrating.md shows
// the marked parts). Compiled with javac against the jars pom.xml names; no build tool.
//
//   java Interop produce BOOTSTRAP < events.jsonl   (one {"topic","mode","type","source","id",
//                                                    "subject","time","data"} per line)
//   java Interop read BOOTSTRAP TOPIC...            (prints one JSON line per record)

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.cloudevents.CloudEvent;
import io.cloudevents.core.builder.CloudEventBuilder;
import io.cloudevents.core.message.Encoding;
import io.cloudevents.jackson.JsonFormat;
import io.cloudevents.kafka.CloudEventDeserializer;
import io.cloudevents.kafka.CloudEventSerializer;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class Interop {
    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        if (args.length >= 2 && args[0].equals("produce")) {
            produce(args[1]);
        } else if (args.length >= 3 && args[0].equals("read")) {
            read(args[1], List.of(args).subList(2, args.length));
        } else {
            System.err.println("usage: Interop produce BOOTSTRAP | read BOOTSTRAP TOPIC...");
            System.exit(2);
        }
    }

    // doc:begin java-publish
    static KafkaProducer<String, CloudEvent> producer(String bootstrap, Encoding encoding) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, CloudEventSerializer.class);
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        props.put(CloudEventSerializer.ENCODING_CONFIG, encoding); // BINARY is the default
        props.put(CloudEventSerializer.EVENT_FORMAT_CONFIG, JsonFormat.CONTENT_TYPE);
        return new KafkaProducer<>(props);
    }

    static CloudEvent event(String type, String source, String id, String subject,
                            OffsetDateTime time, byte[] jsonData) {
        return CloudEventBuilder.v1()
            .withType(type)                 // e.g. "consent.granted.v1"
            .withSource(URI.create(source)) // your service; source + id must be unique
            .withId(id)
            .withSubject(subject)           // the person (the account for account-level events)
            .withTime(time)
            .withDataContentType("application/json")
            .withData(jsonData)
            .build();
    }

    static void send(KafkaProducer<String, CloudEvent> producer, String topic, CloudEvent event)
            throws Exception {
        // The key is always the subject: it keeps one subject's events in order.
        producer.send(new ProducerRecord<>(topic, event.getSubject(), event)).get();
    }
    // doc:end

    private static void produce(String bootstrap) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        try (KafkaProducer<String, CloudEvent> binary = producer(bootstrap, Encoding.BINARY);
             KafkaProducer<String, CloudEvent> structured = producer(bootstrap, Encoding.STRUCTURED)) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                JsonNode spec = JSON.readTree(line);
                CloudEvent event = event(
                    spec.get("type").asText(), spec.get("source").asText(), spec.get("id").asText(),
                    spec.get("subject").asText(), OffsetDateTime.parse(spec.get("time").asText()),
                    JSON.writeValueAsBytes(spec.get("data")));
                boolean isBinary = spec.get("mode").asText().equals("binary");
                send(isBinary ? binary : structured, spec.get("topic").asText(), event);
            }
        }
    }

    // doc:begin java-read
    static KafkaConsumer<String, byte[]> consumer(String bootstrap, String groupId) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        // Bytes, then CloudEventDeserializer per record: a tombstone (consent.state of an erased
        // subject) has no event, and the deserializer would fail the whole poll on it.
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        return new KafkaConsumer<>(props);
    }

    static CloudEvent eventOf(ConsumerRecord<String, byte[]> record) {
        if (record.value() == null) {
            return null; // a tombstone: forget record.key()
        }
        try (CloudEventDeserializer events = new CloudEventDeserializer()) {
            // content-type application/cloudevents+json: structured; ce_specversion: binary
            return events.deserialize(record.topic(), record.headers(), record.value());
        }
    }
    // doc:end

    private static void read(String bootstrap, List<String> topics) throws Exception {
        try (KafkaConsumer<String, byte[]> consumer = consumer(bootstrap, "interop-" + System.nanoTime())) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (String topic : topics) {
                consumer.partitionsFor(topic).forEach(p -> partitions.add(new TopicPartition(topic, p.partition())));
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> ends = consumer.endOffsets(partitions);
            while (ends.entrySet().stream().anyMatch(e -> consumer.position(e.getKey()) < e.getValue())) {
                for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                    System.out.println(JSON.writeValueAsString(describe(record)));
                }
            }
        }
    }

    private static ObjectNode describe(ConsumerRecord<String, byte[]> record) throws Exception {
        ObjectNode out = JSON.createObjectNode();
        out.put("topic", record.topic());
        out.put("partition", record.partition());
        out.put("offset", record.offset());
        out.put("key", record.key());
        try {
            CloudEvent event = eventOf(record);
            if (event == null) {
                out.putNull("event");
                return out;
            }
            ObjectNode seen = out.putObject("event");
            seen.put("type", event.getType());
            seen.put("id", event.getId());
            seen.put("source", event.getSource().toString());
            seen.put("subject", event.getSubject());
            seen.put("datacontenttype", event.getDataContentType());
            seen.set("data", JSON.readTree(event.getData().toBytes()));
        } catch (RuntimeException e) {
            out.put("error", e.toString());
        }
        return out;
    }
}
