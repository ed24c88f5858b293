package org.dmp.hapipeer;

import ca.uhn.fhir.rest.server.RestfulServer;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/** Usage: HapiPeerServer PORT — serves HAPI's JPA FHIR R4 server at http://127.0.0.1:PORT/fhir. */
public final class HapiPeerServer {

	private HapiPeerServer() {}

	public static void main(String[] args) throws Exception {
		if (args.length != 1) {
			System.err.println("usage: HapiPeerServer PORT");
			System.exit(2);
		}
		int port = Integer.parseInt(args[0]);

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(HapiPeerConfig.class);
		spring.registerShutdownHook();
		RestfulServer fhir = spring.getBean(RestfulServer.class);

		Server jetty = new Server();
		ServerConnector connector = new ServerConnector(jetty);
		connector.setHost("127.0.0.1"); // loopback only: no authentication is configured
		connector.setPort(port);
		jetty.addConnector(connector);

		ServletContextHandler context = new ServletContextHandler();
		context.setContextPath("/");
		context.addServlet(new ServletHolder(fhir), "/fhir/*");
		jetty.setHandler(context);
		jetty.setStopAtShutdown(true);
		jetty.start();
		System.out.println("HAPI FHIR JPA server listening on http://127.0.0.1:" + port + "/fhir");
		jetty.join();
	}
}
