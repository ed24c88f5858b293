package ehrsession;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.rest.api.MethodOutcome;
import ca.uhn.fhir.rest.client.api.IGenericClient;
import ca.uhn.fhir.rest.client.interceptor.BearerTokenAuthInterceptor;
import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import ca.uhn.fhir.util.VersionUtil;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.hl7.fhir.instance.model.api.IIdType;
import org.hl7.fhir.r4.model.Attachment;
import org.hl7.fhir.r4.model.Binary;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CapabilityStatement;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.ContactPoint;
import org.hl7.fhir.r4.model.DocumentReference;
import org.hl7.fhir.r4.model.Enumerations;
import org.hl7.fhir.r4.model.HumanName;
import org.hl7.fhir.r4.model.IdType;
import org.hl7.fhir.r4.model.Identifier;
import org.hl7.fhir.r4.model.ListResource;
import org.hl7.fhir.r4.model.Patient;
import org.hl7.fhir.r4.model.Period;
import org.hl7.fhir.r4.model.Practitioner;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Resource;

/**
 * The scripted EHR session (issue 9) with HAPI FHIR's generic client, against any FHIR R4 base URL.
 *
 * <p>{@code java -jar target/ehr-session.jar --base-url URL [--token TOKEN]}. Each step checks what it
 * got; the first that fails ends the program with exit 1 and {@code FAILED <step>: <what>} on stderr.
 * On success one JSON line on stdout sums the session up (the keys the Python and Node clients print).
 */
public final class EhrSession {
  static final String INS_NIR = "urn:oid:1.2.250.1.213.1.4.8";
  static final String LOINC = "http://loinc.org";
  static final String CLASSES = "urn:oid:1.2.250.1.213.1.1.4.1"; // TRE_A03-ClasseDocument
  static final String SECTORS =
      "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite";
  static final String MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";
  static final SecureRandom RANDOM = new SecureRandom();

  static final class StepFailed extends RuntimeException {
    StepFailed(String what) {
      super(what);
    }
  }

  private final IGenericClient client;
  private final Map<String, Object> summary = new LinkedHashMap<>();
  private final List<String> steps = new ArrayList<>();

  EhrSession(IGenericClient client) {
    this.client = client;
    summary.put("client", "hapi-fhir-client " + VersionUtil.getVersion());
    summary.put("steps", steps);
    summary.put("quirks", new ArrayList<String>()); // none met so far: same keys as the other clients
  }

  static void check(boolean condition, String what) {
    if (!condition) {
      throw new StepFailed(what);
    }
  }

  /** A 15-digit NIR, new each run: sex, birth year and month, a random place and order, the key. */
  static String insNir(boolean male, LocalDate birth) {
    String body = String.format("%d%02d%02d99%03d%03d", male ? 1 : 2, birth.getYear() % 100,
        birth.getMonthValue(), RANDOM.nextInt(1000), RANDOM.nextInt(1000));
    return body + String.format("%02d", 97 - Long.parseLong(body) % 97);
  }

  static String urn() {
    return "urn:uuid:" + UUID.randomUUID();
  }

  static CodeableConcept concept(String system, String code, String display) {
    CodeableConcept concept = new CodeableConcept();
    concept.addCoding().setSystem(system).setCode(code).setDisplay(display);
    return concept;
  }

  /** The id part of a transaction entry's location ("Binary/1/_history/1", absolute or not). */
  static String localId(String location, String type) {
    IdType id = new IdType(location);
    check(type.equals(id.getResourceType()) && id.hasIdPart(), "location " + location + " is not a " + type);
    return id.getIdPart();
  }

  static byte[] sha1(byte[] data) throws Exception {
    return MessageDigest.getInstance("SHA-1").digest(data);
  }

  /** Plain R4 that also carries what the DMP's PDSm profile requires (masterIdentifier, custodian...). */
  static DocumentReference document(String patientId, byte[] data, String binaryUrl) throws Exception {
    Date now = new Date();
    DocumentReference doc = new DocumentReference();
    Practitioner author = new Practitioner();
    author.setId("author");
    author.addIdentifier().setSystem("urn:oid:1.2.250.1.71.4.2.1").setValue("810000000001");
    author.addName().setFamily("BERNARD").addGiven("Claire");
    doc.addContained(author);
    doc.setMasterIdentifier(new Identifier().setSystem("urn:ietf:rfc:3986").setValue(urn()));
    doc.setStatus(Enumerations.DocumentReferenceStatus.CURRENT);
    doc.setType(concept(LOINC, "11488-4", "Consult note"));
    doc.addCategory(concept(CLASSES, "10", "Compte rendu"));
    doc.setSubject(new Reference("Patient/" + patientId));
    doc.setDate(now);
    doc.addAuthor(new Reference("#author"));
    doc.setCustodian(new Reference().setType("Organization").setIdentifier(
        new Identifier().setSystem("urn:oid:1.2.250.1.71.4.2.2").setValue("1750000001")));
    doc.addSecurityLabel(concept("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N", null));
    Attachment attachment = new Attachment().setContentType("text/plain").setLanguage("fr-FR")
        .setUrl(binaryUrl).setTitle("Compte rendu de consultation").setCreation(now)
        .setSize(data.length).setHash(sha1(data));
    doc.addContent().setAttachment(attachment);
    doc.getContext().setPeriod(new Period().setStart(now))
        .setFacilityType(concept(SECTORS, "SA07", null))
        .setPracticeSetting(concept("http://snomed.info/sct", "394802001", "General medicine"));
    return doc;
  }

  void run() throws Exception {
    steps.add("metadata");
    CapabilityStatement statement = client.capabilities().ofType(CapabilityStatement.class).execute();
    String fhirVersion = statement.getFhirVersion() == null ? "" : statement.getFhirVersion().toCode();
    check(fhirVersion.startsWith("4.0"), "fhirVersion " + fhirVersion);
    summary.put("fhirVersion", fhirVersion);

    steps.add("create-patient");
    LocalDate birth = LocalDate.of(1940 + RANDOM.nextInt(60), 1 + RANDOM.nextInt(12), 15);
    String ins = insNir(false, birth);
    Patient patient = new Patient();
    patient.addIdentifier().setUse(Identifier.IdentifierUse.OFFICIAL).setSystem(INS_NIR).setValue(ins);
    patient.addName().setUse(HumanName.NameUse.OFFICIAL).setFamily("MARTIN").addGiven("Camille").addGiven("Louise");
    patient.addName().setUse(HumanName.NameUse.USUAL).setFamily("DURAND").addGiven("Camille");
    patient.setGender(Enumerations.AdministrativeGender.FEMALE);
    patient.setBirthDate(java.sql.Date.valueOf(birth));
    MethodOutcome created = client.create().resource(patient).execute();
    IIdType patientId = created.getId();
    check(patientId != null && patientId.hasIdPart(), "the create returned no id");
    check("1".equals(patientId.getVersionIdPart()), "new Patient version " + patientId.getVersionIdPart());
    summary.put("patient", patientId.getIdPart());
    summary.put("ins", ins);

    steps.add("search-patient");
    Bundle found = client.search().forResource(Patient.class)
        .where(Patient.IDENTIFIER.exactly().systemAndIdentifier(INS_NIR, ins))
        .returnBundle(Bundle.class).execute();
    List<Bundle.BundleEntryComponent> matches = found.getEntry().stream()
        .filter(e -> e.getSearch().getMode() != Bundle.SearchEntryMode.INCLUDE).toList();
    summary.put("searchMatches", matches.size());
    check(matches.size() == 1, "identifier search found " + matches.size() + " Patients, expected 1");
    String foundId = matches.get(0).getResource().getIdElement().getIdPart();
    check(patientId.getIdPart().equals(foundId), "search found Patient/" + foundId + ", created " + patientId);

    steps.add("submit-documents");
    byte[] data = ("Consultation du " + LocalDate.now() + "\nPatiente vue pour bilan annuel. RAS.\n")
        .getBytes(StandardCharsets.UTF_8);
    String listUrl = urn();
    String docUrl = urn();
    String binaryUrl = urn();
    ListResource submission = new ListResource();
    submission.setStatus(ListResource.ListStatus.CURRENT).setMode(ListResource.ListMode.WORKING)
        .setCode(concept(MHD_LIST_TYPES, "submissionset", null))
        .setSubject(new Reference("Patient/" + patientId.getIdPart())).setDate(new Date());
    submission.addIdentifier().setUse(Identifier.IdentifierUse.USUAL).setSystem("urn:ietf:rfc:3986").setValue(urn());
    submission.addEntry().setItem(new Reference(docUrl));
    Binary binary = new Binary().setContentType("text/plain").setData(data);
    Bundle transaction = new Bundle().setType(Bundle.BundleType.TRANSACTION);
    Resource[] resources = {submission, document(patientId.getIdPart(), data, binaryUrl), binary};
    String[] fullUrls = {listUrl, docUrl, binaryUrl};
    for (int i = 0; i < resources.length; i++) {
      transaction.addEntry().setFullUrl(fullUrls[i]).setResource(resources[i]).getRequest()
          .setMethod(Bundle.HTTPVerb.POST).setUrl(resources[i].fhirType());
    }
    Bundle response = client.transaction().withBundle(transaction).execute();
    check(response.getType() == Bundle.BundleType.TRANSACTIONRESPONSE, "transaction answered a " + response.getType());
    check(response.getEntry().size() == resources.length, response.getEntry().size() + " response entries");
    List<String> statuses = new ArrayList<>();
    for (Bundle.BundleEntryComponent entry : response.getEntry()) {
      statuses.add(entry.getResponse().getStatus());
    }
    summary.put("transaction", statuses);
    for (int i = 0; i < statuses.size(); i++) {
      check(statuses.get(i) != null && statuses.get(i).startsWith("201"), "entry " + i + " status " + statuses.get(i));
      check(response.getEntry().get(i).getResponse().hasLocation(), "entry " + i + " has no location");
    }
    String docId = localId(response.getEntry().get(1).getResponse().getLocation(), "DocumentReference");
    String binaryId = localId(response.getEntry().get(2).getResponse().getLocation(), "Binary");
    summary.put("documentReference", docId);
    summary.put("binary", binaryId);

    steps.add("read-documents");
    DocumentReference readDoc = client.read().resource(DocumentReference.class).withId(docId).execute();
    String subject = readDoc.getSubject().getReference();
    check(subject != null && subject.endsWith("Patient/" + patientId.getIdPart()), "subject " + subject);
    check("11488-4".equals(readDoc.getType().getCodingFirstRep().getCode()), "DocumentReference.type changed");
    String url = readDoc.getContentFirstRep().getAttachment().getUrl();
    check(url != null && url.endsWith("Binary/" + binaryId),
        "attachment.url " + url + " was not resolved to Binary/" + binaryId + " (sent " + binaryUrl + ")");
    Binary readBinary = client.read().resource(Binary.class).withId(binaryId).execute();
    check("text/plain".equals(readBinary.getContentType()), "Binary.contentType " + readBinary.getContentType());
    check(java.util.Arrays.equals(readBinary.getData(), data), "the Binary's bytes differ from those sent");
    summary.put("binaryBytes", data.length);

    steps.add("update-patient");
    Patient current = client.read().resource(Patient.class).withId(patientId.getIdPart()).execute();
    String readVersion = current.getIdElement().getVersionIdPart();
    check(readVersion != null, "the read Patient's id has no version: " + current.getIdElement());
    current.addTelecom().setSystem(ContactPoint.ContactPointSystem.PHONE).setValue("+33 6 12 34 56 78")
        .setUse(ContactPoint.ContactPointUse.MOBILE);
    // HAPI sends If-Match: W/"<version>" when the id it updates carries a version (as a read's does)
    MethodOutcome updated = client.update().resource(current).withId(current.getIdElement()).execute();
    String newVersion = updated.getId().getVersionIdPart();
    summary.put("versionAfterUpdate", newVersion);
    check(String.valueOf(Integer.parseInt(readVersion) + 1).equals(newVersion),
        "version " + newVersion + " after updating version " + readVersion);
    try {
      client.update().resource(current).withId(current.getIdElement()).execute(); // the stale version
      throw new StepFailed("an update with the stale If-Match W/\"" + readVersion + "\" was accepted");
    } catch (BaseServerResponseException refused) {
      summary.put("staleUpdateStatus", refused.getStatusCode());
      check(refused.getStatusCode() == 412 || refused.getStatusCode() == 409,
          "the stale update was refused with " + refused.getStatusCode() + ", expected 412 or 409");
    }

    steps.add("patient-history");
    Bundle history = client.history().onInstance(new IdType("Patient", patientId.getIdPart()))
        .returnBundle(Bundle.class).execute();
    check(history.getType() == Bundle.BundleType.HISTORY, "history is a " + history.getType() + " Bundle");
    List<String> versions = new ArrayList<>();
    for (Bundle.BundleEntryComponent entry : history.getEntry()) {
      versions.add(entry.getResource().getMeta().getVersionId());
    }
    summary.put("history", versions);
    check(versions.equals(List.of("2", "1")), "history versions " + versions + ", expected [2, 1] (newest first)");
  }

  public static void main(String[] args) {
    String base = null;
    String token = null;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--base-url" -> base = args[i + 1];
        case "--token" -> token = args[i + 1];
        default -> {
          System.err.println("unknown option " + args[i]);
          System.exit(2);
        }
      }
    }
    if (base == null) {
      System.err.println("usage: ehr-session --base-url URL [--token TOKEN]");
      System.exit(2);
    }
    FhirContext context = FhirContext.forR4();
    IGenericClient client = context.newRestfulGenericClient(base.replaceAll("/+$", ""));
    if (token != null && !token.isEmpty()) {
      client.registerInterceptor(new BearerTokenAuthInterceptor(token));
    }
    EhrSession session = new EhrSession(client);
    try {
      session.run();
    } catch (Exception error) {
      String step = session.steps.isEmpty() ? "start" : session.steps.get(session.steps.size() - 1);
      System.err.println("FAILED " + step + ": " + error.getClass().getSimpleName() + ": " + error.getMessage());
      System.exit(1);
    }
    System.out.println(Json.encode(session.summary));
  }
}
